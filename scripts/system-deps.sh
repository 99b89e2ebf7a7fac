#!/usr/bin/env bash
# Installs the OS packages Dropserver needs (as root), or prints the exact command to run.
#   system-deps.sh run   -> what `make run` needs (bubblewrap and libseccomp2 for the sandbox,
#                           e2fsprogs for the data images that enforce disk quotas, caddy for
#                           DS_TLS, restic for off-site backups)
#   system-deps.sh test  -> plus Chromium for the browser tests, wrk for `make bench`
set -euo pipefail
want=(bubblewrap libseccomp2 e2fsprogs caddy restic)  # e2fsprogs: mkfs.ext4/e2fsck/resize2fs of data images; caddy: the TLS edge; restic: off-site copies
[[ "${1:-run}" == test ]] && want+=(chromium iproute2 strace)  # ip netns: the sandbox network tests; strace: the seccomp trace
[[ "${1:-run}" == test ]] && want+=(wrk)  # the load generator of bench/gateway.py
[[ "${1:-run}" == test ]] && want+=(pebble libnss3-tools)  # TLS tests: a local ACME CA; certutil (Chromium trusting a test root)
[[ "${1:-run}" == test ]] && want+=(openssh-server openssh-client)  # the off-site drill's sshd on loopback (sftp: repository)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "Installing ${missing[*]} ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  # Debian's caddy package enables its own caddy.service (a welcome page on :80); Dropserver
  # runs Caddy itself (`serve`, DS_TLS), so that one is switched off when we installed it.
  if [[ " ${missing[*]} " == *" caddy "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now caddy.service >/dev/null 2>&1 || true
  fi
  # Likewise the sshd Debian's openssh-server starts on :22: the tests start their own, on
  # loopback, with their own config; one we installed is not left listening on every address.
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now ssh.service >/dev/null 2>&1 || true
  fi
else
  echo "Dropserver needs: ${missing[*]}. Install with:"
  echo "    sudo apt-get install -y ${missing[*]}"
  # The panel runs without them; sandboxes refuse to start and say why. Tests cannot.
  [[ "${1:-run}" == test ]] && exit 1
fi
exit 0
