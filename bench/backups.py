"""Backup benchmark: backup and restore of a few hundred MB of mixed data against `tar czf` and
`tar xzf` of the same folder in the same run, and the appspace's downtime during the backup.

The data is an appspace's data dir served by a real sandbox (its own supervisor, as root): log
text, an SQLite database, already-compressed bytes, thousands of small JSON notes. The backup
runs the same steps as `backups.services.backup_create` (two-phase snapshot with the sandbox
frozen for the second, SHA-256 of every file, zstd tar written, fsynced, renamed, then read
back and verified) and the restore those of `backups.restore` (safe extraction, every checksum,
hand-over to the appspace's uid, atomic swap). While the backup runs, a client keeps sending
requests to the app: the longest wait it sees is reported next to the recorded freeze.

Run as root: `make bench BENCH_ARGS=backups` or `python -m bench backups`. Scale the data with
DS_BENCH_BACKUP_SCALE (1.0 = ~310 MB).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from django.conf import settings

from sandbox import layout
from sandbox.client import SandboxClient
from sandbox.protocol import SandboxError
from sandbox.spec import SandboxSpec

REPO = Path(__file__).resolve().parent.parent
APP = """
import { createApp } from "@dropserver/app";
let n = 0;
createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response(String(n)) },
  { method: "POST", path: "/log", auth: "public", handler: async (ctx) => {
      n++;
      await Deno.writeTextFile(`${ctx.dataPath}/activity.log`, `request ${n}\\n`, { append: true });
      return new Response("ok");
  } },
] });
"""


def generate(root: Path, scale: float, seed: int = 7) -> None:
    """~310 MB at scale 1: 100 MB of logs, ~80 MB SQLite, 100 MB of incompressible "photos",
    6000 small JSON notes (~35 MB)."""
    rnd = random.Random(seed)
    words = ["".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 10)))
             for _ in range(5000)]  # fmt: skip
    cum, total = [], 0.0
    for i in range(len(words)):
        total += 1 / (i + 1)
        cum.append(total)
    pool = [
        f"2026-11-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d} "
        + " ".join(rnd.choices(words, cum_weights=cum, k=rnd.randint(5, 25)))
        for _ in range(200_000)
    ]

    def text(nbytes: int) -> str:
        lines = rnd.choices(pool, k=max(1, nbytes // 100))
        return "\n".join(lines)[:nbytes]

    (root / "logs").mkdir(parents=True)
    for i in range(max(1, int(10 * scale))):
        (root / "logs" / f"app-{i}.log").write_text(text(10 * 1024 * 1024))
    db = sqlite3.connect(root / "app.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("create table items (id integer primary key, title text, body text, n integer)")
    rows = ((i, pool[i % len(pool)][:40], pool[(i * 7) % len(pool)], rnd.randint(0, 10**9))
            for i in range(int(500_000 * scale)))  # fmt: skip
    db.executemany("insert into items values (?,?,?,?)", rows)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    (root / "photos").mkdir()
    for i in range(max(1, int(20 * scale))):
        (root / "photos" / f"img-{i:03d}.jpg").write_bytes(rnd.randbytes(5 * 1024 * 1024))
    for d in range(max(1, int(60 * scale))):
        sub = root / "notes" / f"{d:02d}"
        sub.mkdir(parents=True)
        for f in range(100):
            note = {"id": f, "title": text(80), "body": text(rnd.randint(200, 10000))}
            (sub / f"note-{f}.json").write_text(json.dumps(note))


def du(path: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _, names in os.walk(path):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return files, size


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def drop_caches() -> None:
    """Write back dirty pages first, so one step's writeback is not billed to the next."""
    os.sync()


def settle() -> None:
    """After deleting a big tree: let the file system finish (discards, journal) first."""
    os.sync()
    time.sleep(2)


class Traffic:
    """A client sending requests to the app while the backup runs; records the longest wait."""

    def __init__(self, sock: str):
        self.sock, self.stop = sock, threading.Event()
        self.worst = 0.0
        self.count = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def request(self, route: int, method: str) -> None:
        head = (f"{method} / HTTP/1.1\r\nHost: a\r\nX-Dropserver-Route: {route}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(self.sock)
            s.sendall(head)
            while s.recv(65536):
                pass

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.request(self.count % 2, "POST" if self.count % 2 else "GET")
            self.worst = max(self.worst, time.perf_counter() - t0)
            self.count += 1
            time.sleep(0.01)


class Bench:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ds-bench-backups-"))
        self.root.chmod(0o711)
        settings.DS_DATA_DIR = self.root
        self.supervisor: subprocess.Popen | None = None

    def start_supervisor(self) -> SandboxClient:
        env = dict(os.environ, DS_DATA_DIR=str(self.root), PYTHONPATH=str(REPO),
                   DS_SANDBOX_IDLE_TIMEOUT="3600")  # fmt: skip
        log = open(self.root / "supervisor.log", "wb")  # noqa: SIM115
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "sandbox"], cwd=REPO, env=env, stdout=log, stderr=log
        )
        client = SandboxClient(layout.control_socket_path())
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return client
            except SandboxError:
                if time.monotonic() > deadline or self.supervisor.poll() is not None:
                    raise
                time.sleep(0.05)

    def spec(self) -> SandboxSpec:
        app_id, version = str(uuid.uuid4()), "1.0.0"
        files = layout.app_files_dir(app_id, version)
        files.mkdir(parents=True)
        for d in (layout.apps_dir(), files.parent.parent, files.parent):
            d.chmod(0o711)
        files.chmod(0o755)
        (files / "app.ts").write_text(APP)
        (files / "app.ts").chmod(0o644)
        return SandboxSpec.for_appspace(
            appspace_id=str(uuid.uuid4()), app_id=app_id, version=version,
            uid=400_000_000 + secrets.randbelow(10**6) * 1000,
        )  # fmt: skip

    def close(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.terminate()
            self.supervisor.wait(20)
        shutil.rmtree(self.root, ignore_errors=True)


def backup_once(data: Path, out_dir: Path, sandbox_id: str, name: str) -> dict[str, float]:
    """The steps of backup_create, timed (no database row)."""
    from backups.format.archive import hash_files, verify_archive, write_archive
    from backups.format.metadata import Metadata
    from backups.quiesce import Quiescer
    from backups.snapshot import take_snapshot

    staging = out_dir / f".staging-{name}"
    quiescer = Quiescer(sandbox_id)
    t0 = time.perf_counter()
    snap = take_snapshot(data, staging, quiescer)
    t1 = time.perf_counter()
    records = hash_files(staging, snap.files)
    t2 = time.perf_counter()
    meta = Metadata(sandbox_id, "app", "Bench", "1.0.0", 0, "now", records, snap.folders)
    dest = out_dir / f"{name}.tar.zst"
    size = write_archive(source=staging, dest=dest, metadata=meta)
    shutil.rmtree(staging)
    t3 = time.perf_counter()
    verify_archive(dest)
    t4 = time.perf_counter()
    quiescer.client.close()
    return {
        "total": t4 - t0, "without_verify": t3 - t0, "snapshot": t1 - t0, "hash": t2 - t1,
        "write": t3 - t2, "verify": t4 - t3, "downtime": snap.downtime_ms / 1000,
        "recopied": snap.recopied, "size": size, "path": dest,
    }  # fmt: skip


def restore_once(archive: Path, appspace_dir: Path, uid: int) -> float:
    """The steps of backup_restore, timed: safe extraction with every checksum, hand-over to the
    appspace's uid, atomic swap (no database row, no start)."""
    from backups.format.archive import extract_archive
    from backups.format.metadata import DATA
    from backups.restore import exchange, hand_over

    stage = appspace_dir / f".restore-{secrets.token_hex(4)}"
    t0 = time.perf_counter()
    extract_archive(archive, stage, max_total_bytes=64 * 1024**3)
    hand_over(stage / DATA, uid)
    live = appspace_dir / "data"
    live.mkdir(exist_ok=True)
    exchange(stage / DATA, live)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(stage)
    return elapsed


def run(options) -> None:
    scale = float(os.environ.get("DS_BENCH_BACKUP_SCALE", "1.0"))
    bench = Bench()
    try:
        _run(bench, scale)
    finally:
        bench.close()


def _run(bench: Bench, scale: float) -> None:
    client = bench.start_supervisor()
    spec = bench.spec()
    data = Path(spec.data_dir)
    t, _ = timed(lambda: generate(data, scale))
    files, size = du(data)
    print(f"data: {files} files, {size / 1024**2:.0f} MB (generated in {t:.0f}s)", flush=True)
    for path in [data, *data.rglob("*")]:
        os.chown(path, spec.uid, spec.uid)
    sock = client.ensure(spec)
    work = bench.root / "work"
    work.mkdir()
    out = bench.root / "backups"
    out.mkdir(mode=0o700)
    time.sleep(1.5)  # past the snapshot's racy window: as data that was not written just now

    drop_caches()
    tgz = work / "data.tar.gz"
    tar_c, _ = timed(lambda: subprocess.run(["tar", "czf", str(tgz), "-C", str(data), "."],
                                            check=True))  # fmt: skip
    drop_caches()
    traffic = Traffic(sock)
    traffic.thread.start()
    ours = backup_once(data, out, spec.id, "typical")
    traffic.stop.set()
    traffic.thread.join()
    drop_caches()
    # Worst case for downtime: every file changed just before (all copied again, frozen).
    for path in data.rglob("*"):
        os.utime(path)
    worst = backup_once(data, out, spec.id, "worst")
    drop_caches()

    # Restores and untars alternate (the disk of a shared VM drifts); medians of 3 each.
    untars, restores = [], []
    for i in range(3):
        untar = work / f"untar-{i}"
        untar.mkdir()
        t, _ = timed(lambda u=untar: subprocess.run(["tar", "xzf", str(tgz), "-C", str(u)],
                                                    check=True))  # fmt: skip
        untars.append(t)
        shutil.rmtree(untar)
        settle()
        restore_dir = work / f"appspace-{i}"
        restore_dir.mkdir()
        restores.append(restore_once(ours["path"], restore_dir, spec.uid))
        shutil.rmtree(restore_dir)
        settle()
    tar_x, restored = statistics.median(untars), statistics.median(restores)
    client.stop(spec.id)

    mb = size / 1024**2
    print(f"tar czf: {tar_c:.2f}s ({mb / tar_c:.0f} MB/s), {tgz.stat().st_size / 1024**2:.0f} MB")
    print(
        f"backup (zstd {settings.DS_BACKUP_ZSTD_LEVEL}, {settings.DS_BACKUP_ZSTD_THREADS} threads):"
        f" {ours['total']:.2f}s incl. verification ({ours['without_verify']:.2f}s without), "
        f"{ours['size'] / 1024**2:.0f} MB"
    )
    print(
        f"  snapshot {ours['snapshot']:.2f}s, sha256 {ours['hash']:.2f}s, "
        f"compress+write+fsync {ours['write']:.2f}s, read back+verify {ours['verify']:.2f}s"
    )
    print(
        f"  ratio backup / tar czf: {ours['total'] / tar_c:.2f} "
        f"(without verification {ours['without_verify'] / tar_c:.2f}); target <= 1.0"
    )
    print(
        f"  downtime (sandbox frozen): {ours['downtime'] * 1000:.0f} ms, "
        f"{ours['recopied']} files copied again while frozen; longest request during the "
        f"backup: {traffic.worst * 1000:.0f} ms ({traffic.count} requests)"
    )
    print(
        f"  worst case (every file changed just before): downtime "
        f"{worst['downtime'] * 1000:.0f} ms for {worst['recopied']} files; backup "
        f"{worst['total']:.2f}s; downtime / snapshot {worst['downtime'] / worst['snapshot']:.2f}"
        f", / backup {worst['downtime'] / worst['total']:.2f}"
    )
    print(f"tar xzf: {tar_x:.2f}s (median; runs {', '.join(f'{t:.2f}' for t in untars)})")
    print(
        f"restore (unpack, every checksum, hand over, swap): {restored:.2f}s (median; runs "
        f"{', '.join(f'{t:.2f}' for t in restores)}); ratio restore / tar xzf: "
        f"{restored / tar_x:.2f}; target <= 1.0"
    )
