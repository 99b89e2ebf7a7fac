"""Off-site copy benchmark: the upload of an appspace backup archive to a restic repository by
`backups.offsite.restic.Repository.backup` (the call the OFFSITE job makes, with its JSON
progress parsing) against `restic backup` run by hand on the same archive, each into a fresh
local repository; then a second backup after 1% of the files changed (a new archive, as the
next scheduled backup writes), its time and the bytes it added against the first.

The data is bench/backups.py's generated set (~310 MB at DS_BENCH_BACKUP_SCALE=1.0), archived
with backups.archive.write_archive (tar + zstd, as every backup). Page caches are dropped
before each timed run. Run: `make bench BENCH_ARGS=offsite` or `python -m bench offsite`.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.backups import drop_caches, du, generate

PASSWORD = "bench-password"


def archive(data: Path, dest: Path) -> int:
    from backups.archive import hash_files, write_archive
    from backups.metadata import FileRecord, Metadata

    files, folders = [], []
    for path in sorted(data.rglob("*")):
        rel = path.relative_to(data).as_posix()
        if path.is_dir():
            folders.append(rel)
        else:
            st = path.stat()
            files.append(FileRecord(rel, st.st_size, "", st.st_mtime))
    records = hash_files(data, files)
    meta = Metadata("bench", "app", "Bench", "1.0.0", 0, "now", records, folders)
    return write_archive(source=data, dest=dest, metadata=meta)


def change_one_percent(data: Path, seed: int = 11) -> int:
    rnd = random.Random(seed)
    files = sorted(p for p in data.rglob("*") if p.is_file())
    chosen = rnd.sample(files, max(1, len(files) // 100))
    for path in chosen:
        with path.open("r+b") as f:
            f.seek(rnd.randrange(max(1, path.stat().st_size)))
            f.write(os.urandom(64))
    return len(chosen)


def run(options) -> None:
    from backups.offsite.restic import Repository

    scale = float(os.environ.get("DS_BENCH_BACKUP_SCALE", "1.0"))
    work = Path(tempfile.mkdtemp(prefix="ds-bench-offsite-"))
    try:
        _run(work, scale, Repository)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _hand(repo: Path, pw: Path, path: Path, cache: Path) -> float:
    env = {"PATH": os.environ["PATH"], "HOME": str(cache), "TZ": "UTC"}
    base = ["restic", "-r", str(repo), "--password-file", str(pw), "--cache-dir", str(cache)]
    subprocess.run([*base, "init"], env=env, check=True, capture_output=True)
    drop_caches()
    t0 = time.perf_counter()
    subprocess.run([*base, "backup", str(path)], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def _run(work: Path, scale: float, Repository) -> None:
    data = work / "data"
    data.mkdir()
    t0 = time.perf_counter()
    generate(data, scale)
    files, size = du(data)
    print(f"data: {files} files, {size / 1024**2:.0f} MB (generated in "
          f"{time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
    pw = work / "pw"
    pw.write_text(PASSWORD)
    first = work / "first.tar.zst"
    mb = archive(data, first) / 1024**2
    print(f"archive: {mb:.0f} MB", flush=True)

    by_hand = _hand(work / "repo-hand", pw, first, work / "cache-hand")
    repo = Repository(str(work / "repo-ours"), pw, env=dict(os.environ), cache_dir=work / "c")
    repo.ensure()
    ticks = []
    drop_caches()
    t0 = time.perf_counter()
    repo.backup([first], ["appspace=bench", "backup=1", "kind=scheduled"],
                progress=lambda f, _m: ticks.append(f))  # fmt: skip
    ours = time.perf_counter() - t0
    added_first = repo.last_summary.get("data_added", 0)
    print(f"restic backup by hand: {by_hand:.2f}s ({mb / by_hand:.0f} MB/s)")
    print(f"off-site copy (Repository.backup): {ours:.2f}s, {len(ticks)} progress updates, "
          f"{added_first / 1024**2:.0f} MB added")  # fmt: skip
    print(f"  ratio off-site copy / restic by hand: {ours / by_hand:.2f} (target <= 1.1)")

    changed = change_one_percent(data)
    second = work / "second.tar.zst"
    first.unlink()
    archive(data, second)
    drop_caches()
    t0 = time.perf_counter()
    repo.backup([second], ["appspace=bench", "backup=2", "kind=scheduled"])
    again = time.perf_counter() - t0
    added = repo.last_summary.get("data_added", 0)
    print(f"second copy after {changed} files (1%) changed: {again:.2f}s, "
          f"{added / 1024**2:.1f} MB added")  # fmt: skip
    print(f"  ratio second / first: time {again / ours:.2f}, bytes added "
          f"{added / max(added_first, 1):.3f} (target <= 0.1)")  # fmt: skip
