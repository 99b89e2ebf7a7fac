"""Sessions left open on the test database when the test session ends.

pytest-django drops the test database last; PostgreSQL refuses while any other session is
connected to it, and pytest-django then only warns ("is being accessed by other users"), leaving
the database behind. Such a session is always a connection something left open: in this
process, a Django connection of another thread or of another async context (while an event loop
runs in a thread, as Playwright's sync API keeps one, Django gives each async context a
connection of its own, which outlives the test unless closed); in another process, a server or
worker that a fixture did not stop. `left_open(connection)` lists them, each with the process
that holds its client end, so that the fixtures that drop the test database
(tests/conftest.py, tests/gateway/conftest.py) fail the run with what to close instead.

`in_thread(fn)` is how tests that drive Playwright's sync API use the ORM without leaving one.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

QUERY = """
    SELECT pid, client_port, application_name, state, backend_start, left(query, 200)
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


def in_thread(fn):
    """fn() in a thread of its own, whose database connection is closed after. Playwright's
    sync API keeps an event loop running in the test's thread: there Django refuses the ORM,
    and where a test allowed it anyway (DJANGO_ALLOW_ASYNC_UNSAFE) its calls went through a
    connection of that async context, which nothing closes, and the product's own async_to_sync
    (the gateway's invalidation broadcast) failed."""
    from django.db import connection

    def run():
        try:
            return fn()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def is_test_database(connection) -> bool:
    """Whether `connection` is on a test database (created by pytest-django or a fixture)."""
    settings_dict = connection.settings_dict
    name = settings_dict["NAME"]
    return name.startswith("test_") or name == settings_dict["TEST"].get("NAME")


def _sessions(connection) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(QUERY)
        return cursor.fetchall()


def _socket_holders() -> dict[int, tuple[int, str]]:
    """Local TCP port -> (pid, command line) of the process holding that socket, from /proc."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    holders: dict[int, tuple[int, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for fd in fds:
            try:
                inode = os.readlink(fd).removeprefix("socket:[").removesuffix("]")
                if inode in inodes:
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    holders[inodes[inode]] = (int(proc.name), cmdline.strip())
            except OSError:  # closed meanwhile
                continue
    return holders


def left_open(connection, *, grace: float = 3.0) -> list[str]:
    """The other sessions on `connection`'s database, described; [] if there are none. Waits
    up to `grace` seconds first: the server process of a client that was just stopped takes a
    moment to notice and leave."""
    deadline = time.monotonic() + grace
    rows = _sessions(connection)
    while rows and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = _sessions(connection)
    if not rows:
        return []
    holders = _socket_holders()
    described = []
    for pid, port, application, state, started, query in rows:
        holder_pid, cmdline = holders.get(port, (None, ""))
        if holder_pid == os.getpid():
            who = "this pytest process (another thread's or async context's connection)"
        elif holder_pid is not None:
            who = f"process {holder_pid}: {cmdline[:200]}"
        else:
            who = "a process not found (another user's, or over a Unix socket)"
        described.append(
            f"backend {pid} (client port {port}, application {application!r}, {state}, "
            f"since {started:%H:%M:%S}), held by {who}; last query: {query}"
        )
    return described


def fail_if_left_open(connection) -> None:
    """Fail the test session if other sessions are on `connection`'s (test) database."""
    left = left_open(connection)
    if left:
        pytest.fail(
            "sessions left open on the test database, which keep it from being dropped:\n"
            + "\n".join(left),
            pytrace=False,
        )
