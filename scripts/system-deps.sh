#!/usr/bin/env bash
# Installs the OS packages Dropserver needs (as root), or prints the exact command to run.
#   system-deps.sh run   -> what `make run` needs (bubblewrap and libseccomp2 for the sandbox,
#                           restic for off-site backups)
#   system-deps.sh test  -> plus Chromium for the browser tests, wrk for `make bench`
set -euo pipefail
want=(bubblewrap libseccomp2 restic)  # restic: off-site backup copies
[[ "${1:-run}" == test ]] && want+=(chromium iproute2 strace)  # ip netns: the sandbox network tests; strace: the seccomp trace
[[ "${1:-run}" == test ]] && want+=(wrk)  # the load generator of bench/gateway.py
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "Installing ${missing[*]} ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
else
  echo "Dropserver needs: ${missing[*]}. Install with:"
  echo "    sudo apt-get install -y ${missing[*]}"
  # The panel runs without them; sandboxes refuse to start and say why. Tests cannot.
  [[ "${1:-run}" == test ]] && exit 1
fi
exit 0
