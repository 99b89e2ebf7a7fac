"""Off-site copies of backups in a restic repository (issue 14).

Modules:
- `restic`: the restic wrapper (a `Repository` with ensure/backup/snapshots/dump/restore/
  forget/check/unlock), its error kinds and the scrubbing of secrets from restic's output.
  It needs no Django models; `Repository.from_settings()` reads DS_BACKUP_REPOSITORY and
  DS_BACKUP_REPOSITORY_PASSWORD_FILE.
"""
