"""Least privilege for what `serve` starts (docs/security.md, "Processes and their uids").

- `drop.py`: started as root, `serve` runs its web servers, TLS edge and Celery workers as the
  DS_RUN_AS user (setuid/setgid/initgroups in the child before exec); only the sandbox
  supervisor keeps uid 0. Also the ownership of what those children write under DS_DATA_DIR.
  What they need root for goes through the supervisor (`sandbox/data/files.py`).

Creating the user is `scripts/run-as-user.sh` (used by `make run` and by the install).
"""
