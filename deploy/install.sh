#!/usr/bin/env bash
# Installs Dropserver as systemd services on a Debian or Ubuntu host (docs/operations.md,
# "Install"). From a checkout in /opt/dropserver:
#
#   sudo deploy/install.sh --domain example.org --email admin@example.org [--tls acme]
#
# Steps: Debian packages (scripts/system-deps.sh), the system user DS_RUN_AS, DS_DATA_DIR and
# /etc/dropserver with their modes, the environment file with a generated SECRET_KEY, a venv
# from requirements/base.lock, the units (deploy/systemd/) and `dropserver-manage`, migrate,
# enable and start, then the setup link. Running it again changes nothing that is already right:
# an existing environment file (and its secret) is kept; units are rewritten only if they differ.
# After `git pull` it is also the upgrade: new requirements, migrations, units (then restart).
#
# Options:
#   --domain NAME          DS_DOMAIN (required the first time; kept from the env file after)
#   --email ADDRESS        DS_ACME_EMAIL, the ACME account's contact (expiry notices)
#   --tls MODE             acme (default), internal, files, off (behind a proxy of your own)
#   --cert FILE --key FILE with --tls files: PEM certificate (e.g. *.DOMAIN) and key
#   --user NAME            DS_RUN_AS (default dropserver)
#   --data-dir DIR         DS_DATA_DIR (default /var/lib/dropserver)
#   --venv DIR             the virtualenv (default: .venv in the checkout)
#   --restart              restart the running units (after an upgrade)
#   --no-apt               do not install Debian packages
#   --no-pip               use the venv as it is (do not create it or install requirements)
#   --no-systemd           write the units but do not reload, enable or start them
#   --no-migrate           do not migrate, check or print the setup link
#   --root DIR             install into DIR as if it were / (implies --no-apt --no-systemd
#                          --no-migrate; the user goes into DIR/etc/passwd): for tests and images
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APP_DIR=$(dirname "$HERE")
# shellcheck source=deploy/lib/user.sh
. "$HERE/lib/user.sh"

DOMAIN="" EMAIL="" TLS="" CERT="" KEY="" ROOT="" RUN_AS="" DATA_DIR="" VENV="$APP_DIR/.venv"
ENV_DIR=/etc/dropserver UNIT_DIR=/etc/systemd/system BIN=/usr/local/bin/dropserver-manage
APT=1 PIP=1 SYSTEMD=1 MIGRATE=1 RESTART=0
UNITS=(dropserver.target dropserver-sandboxd.service dropserver-web.service
       dropserver-worker-jobs.service dropserver-worker-housekeeping.service)

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }
need() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --domain) need "$@"; DOMAIN=$2; shift ;;
    --email) need "$@"; EMAIL=$2; shift ;;
    --tls) need "$@"; TLS=$2; shift ;;
    --cert) need "$@"; CERT=$2; shift ;;
    --key) need "$@"; KEY=$2; shift ;;
    --user) need "$@"; RUN_AS=$2; shift ;;
    --data-dir) need "$@"; DATA_DIR=$2; shift ;;
    --venv) need "$@"; VENV=$2; shift ;;
    --root) need "$@"; ROOT=$(cd "$2" && pwd); APT=0 SYSTEMD=0 MIGRATE=0; shift ;;
    --restart) RESTART=1 ;;
    --no-apt) APT=0 ;;
    --no-pip) PIP=0 ;;
    --no-systemd) SYSTEMD=0 ;;
    --no-migrate) MIGRATE=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

[[ $(id -u) -eq 0 ]] || die "run it as root (sudo): it creates a user, directories and units"
case $APP_DIR in
  /root|/root/*|/home/*) die "the checkout is under $APP_DIR, which $RUN_AS cannot read and the
units hide (ProtectHome=): clone it into /opt/dropserver and run install.sh from there" ;;
esac

ENV_FILE=$ENV_DIR/env
PYTHON=$VENV/bin/python
at() { printf '%s%s' "$ROOT" "$1"; }  # a path of the installed system, under --root if given

# The existing environment file wins: a second run never changes the instance's settings.
current() { sed -n "s/^$1=//p" "$(at "$ENV_FILE")" 2>/dev/null | tail -n 1; }
if [[ -f $(at "$ENV_FILE") ]]; then
  for pair in "DS_DOMAIN:$DOMAIN" "DS_TLS:$TLS" "DS_ACME_EMAIL:$EMAIL" "DS_TLS_CERT:$CERT" \
              "DS_TLS_KEY:$KEY" "DS_DATA_DIR:$DATA_DIR" "DS_RUN_AS:$RUN_AS"; do
    key=${pair%%:*} asked=${pair#*:} existing=$(current "${pair%%:*}")
    [[ -z $asked || $asked == "$existing" ]] || die "$ENV_FILE already says $key=$existing;
edit it, then restart dropserver.target, to change it"
  done
  DOMAIN=$(current DS_DOMAIN) TLS=$(current DS_TLS)
  CERT=$(current DS_TLS_CERT) KEY=$(current DS_TLS_KEY)
  DATA_DIR=$(current DS_DATA_DIR) RUN_AS=$(current DS_RUN_AS)
fi
RUN_AS=${RUN_AS:-dropserver} DATA_DIR=${DATA_DIR:-/var/lib/dropserver}
[[ $RUN_AS =~ ^[a-z_][a-z0-9_-]*$ ]] || die "--user $RUN_AS is not a valid user name"
[[ $DATA_DIR == /* && $VENV == /* ]] || die "--data-dir and --venv must be absolute paths"
[[ -n $DOMAIN ]] || die "--domain is required (the domain whose wildcard points at this host)"
[[ $DOMAIN =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ && $DOMAIN == *.* ]] || die "--domain $DOMAIN is not a domain name"
TLS=${TLS:-acme}
case $TLS in
  acme|internal|off) [[ -z $CERT && -z $KEY ]] || die "--cert/--key go with --tls files" ;;
  files) [[ $CERT == /* && $KEY == /* ]] || die "--tls files needs --cert and --key (absolute paths)" ;;
  *) die "--tls must be acme, internal, files or off, not $TLS" ;;
esac

if [[ $APT -eq 1 ]]; then
  say "Debian packages"
  "$APP_DIR/scripts/system-deps.sh" run
  dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed" \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
fi

say "user $RUN_AS"
ds_ensure_user "$RUN_AS" "$ROOT"
read -r RUN_UID RUN_GID < <(ds_user_ids "$RUN_AS" "$ROOT")

say "directories"
# DS_DATA_DIR: the user's; others may traverse it (sandbox uids open app files below it),
# not list it. /etc/dropserver: root's, readable by the group (the units read the env file).
install -d -m 0711 -o "$RUN_UID" -g "$RUN_GID" "$(at "$DATA_DIR")"
install -d -m 0750 -o 0 -g "$RUN_GID" "$(at "$ENV_DIR")"

say "environment file $ENV_FILE"
env_file=$(at "$ENV_FILE")
if [[ ! -f $env_file ]]; then
  secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
  tmp=$(mktemp "$env_file.XXXXXX")
  {
    echo "# Dropserver's settings (docs/operations.md), read by every unit and by dropserver-manage."
    echo "# One KEY=VALUE a line, no quotes. After a change: systemctl restart dropserver.target"
    echo "DS_DOMAIN=$DOMAIN"
    echo "DS_TLS=$TLS"
    [[ -n $EMAIL ]] && echo "DS_ACME_EMAIL=$EMAIL"
    [[ $TLS == files ]] && printf 'DS_TLS_CERT=%s\nDS_TLS_KEY=%s\n' "$CERT" "$KEY"
    [[ $TLS == off ]] && echo "DS_BEHIND_PROXY=1"
    echo "DS_DATA_DIR=$DATA_DIR"
    echo "DS_RUN_AS=$RUN_AS"
    echo "SECRET_KEY=$secret"
  } >"$tmp"
  chmod 0640 "$tmp"
  chown 0:"$RUN_GID" "$tmp"
  mv "$tmp" "$env_file"
else
  echo "    kept as it is (never rewritten: it holds the SECRET_KEY)"
  grep -q '^SECRET_KEY=.\{50,\}' "$env_file" || grep -q '^SECRET_KEY_FILE=' "$env_file" \
    || die "$ENV_FILE has no SECRET_KEY (50+ characters): add one, then run this again"
fi
[[ $(stat -c '%a %u %g' "$env_file") == "640 0 $RUN_GID" ]] || { chmod 0640 "$env_file"; chown 0:"$RUN_GID" "$env_file"; }

if [[ $PIP -eq 1 ]]; then
  say "virtualenv $VENV"
  [[ -x $PYTHON ]] || python3 -m venv "$VENV"
  stamp="$VENV/.dropserver-lock-$(sha256sum "$APP_DIR/requirements/base.lock" | cut -c1-16)"
  if [[ ! -f $stamp ]]; then
    "$PYTHON" -m pip install -q --disable-pip-version-check --require-hashes -r "$APP_DIR/requirements/base.lock"
    rm -f "$VENV"/.dropserver-lock-*
    touch "$stamp"
  fi
  # The units cannot write __pycache__ (ProtectSystem=strict): compile the code now, once.
  "$PYTHON" -m compileall -q -x '/(\.venv|examples|tests|bench)/' "$APP_DIR" >/dev/null || true
fi
[[ -x $PYTHON ]] || die "no Python at $PYTHON (drop --no-pip, or pass --venv)"

say "units"
changed=0
render() {  # render TEMPLATE TARGET MODE: write only when the content differs
  local target tmp
  target=$(at "$2")
  tmp=$(mktemp)  # outside the target's directory, which stays untouched when nothing changed
  sed -e "s|@APP_DIR@|$APP_DIR|g" -e "s|@PYTHON@|$PYTHON|g" -e "s|@USER@|$RUN_AS|g" \
      -e "s|@ENV_FILE@|$ENV_FILE|g" \
      -e "s|@DATA_DIR@|$DATA_DIR|g" "$1" >"$tmp"
  if ! cmp -s "$tmp" "$target" || [[ $(stat -c '%a %u %g' "$target") != "${3#0} 0 0" ]]; then
    install -D -m "$3" -o 0 -g 0 "$tmp" "$target"
    changed=1
    echo "    wrote $2"
  fi
  rm -f "$tmp"
}
for unit in "${UNITS[@]}"; do
  render "$HERE/systemd/$unit" "$UNIT_DIR/$unit" 0644
done
render "$HERE/dropserver-manage" "$BIN" 0755

manage() { "$(at "$BIN")" "$@"; }
if [[ $MIGRATE -eq 1 ]]; then
  say "database"
  manage migrate --noinput
fi

if [[ $SYSTEMD -eq 1 ]]; then
  say "services"
  [[ $changed -eq 0 ]] || systemctl daemon-reload
  systemctl enable --quiet "${UNITS[@]}"
  if [[ $RESTART -eq 1 ]]; then
    systemctl restart dropserver.target
  else
    systemctl start dropserver.target
  fi
fi

if [[ $MIGRATE -eq 1 ]]; then
  say "checks (manage.py check --deploy)"
  manage check --deploy || echo "    (fix what is listed above, then: sudo dropserver-manage check --deploy)"
  say "first admin"
  manage setup_link 2>/dev/null || echo "    this instance already has an admin"
fi

cat <<EOF

Dropserver is installed for $DOMAIN (TLS: $TLS).
  DNS:       *.$DOMAIN  A/AAAA  <this host's address>   (panel: https://dropid.$DOMAIN/)
  Settings:  $ENV_FILE   (then: systemctl restart dropserver.target)
  Status:    systemctl status 'dropserver*'    journalctl -u 'dropserver*'
  Commands:  sudo dropserver-manage <command>   (e.g. setup_link, list_appspaces)
EOF
