"""Off-site copies of backups in a restic repository (issue 14).

Modules:
- `restic`: the restic wrapper (a `Repository` with ensure/backup/snapshots/dump/restore/
  forget/check/unlock), its error kinds and the scrubbing of secrets from restic's output.
  It needs no Django models; `Repository.from_settings()` reads DS_BACKUP_REPOSITORY and
  DS_BACKUP_REPOSITORY_PASSWORD_FILE.
- `results`: `ResticError` (its kinds), `classify`, `Snapshot`, `CheckResult` (re-exported by
  `restic`).
- `copies`: the OFFSITE job, retention and integrity check there, fetching a snapshot's
  archive for a restore.
- `tree`: what a copy sends, the archive's file tree (so restic skips unchanged files), and
  turning a restored tree back into an archive for the verified restore path.
- `sftp`: the strict ssh command restic runs for `sftp:` repositories.
"""
