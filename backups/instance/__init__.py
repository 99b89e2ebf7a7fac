"""Whole-instance backups: a snapshot of everything needed to rebuild the instance
(`snapshot`: backup_instance / restore_instance), the database's consistent copy inside it
(`database`), and instance snapshots in the off-site repository (`repository`)."""
