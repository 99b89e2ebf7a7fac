# The unprivileged system user Dropserver's web, edge and workers run as (DS_RUN_AS), as shell
# functions sourced by deploy/install.sh. The same user as scripts/run-as-user.sh makes for
# `make run` (same useradd flags), plus a PREFIX so a test can install into a scratch root.
# Idempotent: an existing user is left as it is.
#
#   ds_ensure_user NAME [PREFIX]   create NAME (system user, own group, no home, no login
#                                  shell); with PREFIX, in PREFIX/etc/passwd instead of the
#                                  host's (useradd --prefix)
#   ds_user_ids NAME [PREFIX]      print "UID GID" of NAME

ds_user_ids() {
  local name=$1 prefix=${2:-}
  if [[ -z $prefix ]]; then
    printf '%s %s\n' "$(id -u "$name")" "$(id -g "$name")"
  else
    awk -F: -v n="$name" '$1 == n { print $3, $4; found = 1 } END { exit !found }' "$prefix/etc/passwd"
  fi
}

ds_ensure_user() {
  local name=$1 prefix=${2:-}
  if ds_user_ids "$name" "$prefix" >/dev/null 2>&1; then
    return 0
  fi
  local args=(--system --user-group --no-create-home --home-dir /nonexistent
              --shell /usr/sbin/nologin --comment "Dropserver (web, edge, workers)")
  [[ -n $prefix ]] && args+=(--prefix "$prefix")
  useradd "${args[@]}" "$name"
}
