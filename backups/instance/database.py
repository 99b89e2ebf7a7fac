"""A consistent copy of the whole database and putting it back, for whole-instance backups.

PostgreSQL: `pg_dump --format=custom` (one snapshot, so consistent while the site runs) and
`pg_restore --clean --if-exists --single-transaction` (all or nothing: a damaged dump leaves
the database as it was). SQLite: the online backup API of the sqlite3 module, both ways.
The client programs are Debian's (postgresql-client); nothing here parses either format.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from django.db import connection

PG_DUMP = "database.pgdump"
SQLITE_DUMP = "database.sqlite3"


class DumpError(Exception):
    """The database could not be dumped or restored; str() is a sentence for the operator."""


def engine() -> str:
    vendor = connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise DumpError(f"Instance backups support PostgreSQL and SQLite, not {vendor}.")
    return vendor


def _pg_env() -> tuple[list[str], dict[str, str]]:
    """Connection flags and environment (the password only in PGPASSWORD, never on argv)."""
    conf = connection.settings_dict
    args = ["--dbname", conf["NAME"]]
    if conf.get("HOST"):
        args += ["--host", str(conf["HOST"])]
    if conf.get("PORT"):
        args += ["--port", str(conf["PORT"])]
    if conf.get("USER"):
        args += ["--username", str(conf["USER"])]
    env = dict(os.environ)
    if conf.get("PASSWORD"):
        env["PGPASSWORD"] = str(conf["PASSWORD"])
    return args, env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DumpError(f"{name} is not installed (Debian package postgresql-client).")
    return path


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {result.returncode}"
        raise DumpError(f"{what} failed: {detail}")


def dump_database(dest_dir: Path) -> str:
    """Write the dump into dest_dir; returns its file name."""
    if engine() == "postgresql":
        args, env = _pg_env()
        out = dest_dir / PG_DUMP
        argv = [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", *args]
        _run([*argv, "--file", str(out)], env, "The database dump (pg_dump)")
        return PG_DUMP
    _sqlite_copy(str(connection.settings_dict["NAME"]), str(dest_dir / SQLITE_DUMP))
    return SQLITE_DUMP


def _sqlite_copy(src_uri: str, dst_path: str) -> None:
    """SQLite's online backup API: a consistent copy while others write."""
    src = sqlite3.connect(src_uri, uri=src_uri.startswith("file:"))
    try:
        dst = sqlite3.connect(dst_path)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def check_dump(path: Path) -> None:
    """Refuse a dump this database cannot take (before anything is changed)."""
    wanted = PG_DUMP if engine() == "postgresql" else SQLITE_DUMP
    if path.name != wanted:
        raise DumpError(
            f"This snapshot holds a {path.name} dump; this instance's database is "
            f"{connection.vendor}. Restore it on an instance with the same database engine."
        )
    if wanted == PG_DUMP:
        _run([_tool("pg_restore"), "--list", str(path)], dict(os.environ), "Reading the dump")
        return
    try:
        probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            probe.execute("PRAGMA quick_check").fetchall()
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        raise DumpError(f"The database dump is damaged: {exc}.") from None


def restore_database(path: Path) -> None:
    """Replace the database's contents with the dump's, all or nothing."""
    connection.close()
    if engine() == "postgresql":
        args, env = _pg_env()
        argv = [
            _tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            *args,
            str(path),
        ]
        _run(argv, env, "Restoring the database (pg_restore)")
        return
    _sqlite_copy(f"file:{path}?mode=ro", str(connection.settings_dict["NAME"]))
