#!/bin/sh
# Create the unprivileged system user Dropserver's web servers, TLS edge and Celery workers run
# as (DS_RUN_AS, default `dropserver`; docs/security.md, "Processes and their uids").
# Idempotent: an existing user is left as it is. Used by `make run` (as root) and by the install.
#   scripts/run-as-user.sh [NAME]       (NAME defaults to $DS_RUN_AS, then `dropserver`)
# Prints the user's name, uid and gid. Needs root to create the user.
set -eu
name="${1:-${DS_RUN_AS-dropserver}}"
if [ -z "$name" ]; then
    echo "DS_RUN_AS is empty: no user to create (everything runs as whoever starts it)." >&2
    exit 0
fi
if ! id -u "$name" >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "run-as-user: the user $name does not exist and only root can create it." >&2
        exit 1
    fi
    # A system user with its own group, no home, no login shell, no password.
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "Dropserver (web, edge, workers)" "$name"
fi
echo "$name uid=$(id -u "$name") gid=$(id -g "$name")"
