"""Off-site copy benchmark: what the OFFSITE job sends, by
`backups.offsite.restic.Repository.backup` (the call the job makes, with its JSON progress
parsing), against `restic backup` run by hand on the same data, each into a fresh local
repository; then a second copy after 1% of the files changed, its time and the bytes it added
against the first.

The job sends each backup as the archive's file tree (backups/offsite/tree.py): the backup's
staging copy moved into `DS_DATA_DIR/backups/.offsite/<appspace>/tree`, unchanged files keeping
their inodes, so restic (with the previous snapshot of that path as parent) skips them. The
bench builds the tree the same way (`tree.update` from a fresh copy of the data, as a backup's
staging copy) and times that step on its own: it is part of the local backup, not the copy.
For comparison it also times the former format, the zstd archive itself (write_archive), and
restic's fixed cost per run (`restic cat config`: opening the key, whose scrypt KDF restic
calibrates at `init`, and the index).

The data is bench/backups.py's generated set (~310 MB at DS_BENCH_BACKUP_SCALE=1.0). Dirty
pages are written back before each timed run. Run: `make bench BENCH_ARGS=offsite` or
`python -m bench offsite`.
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
MB = 1024**2
ROUNDS = int(os.environ.get("BENCH_OFFSITE_ROUNDS", "3"))


def archive(data: Path, dest: Path) -> int:
    from backups.format.archive import hash_files, write_archive
    from backups.format.metadata import FileRecord, Metadata

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
    from django.conf import settings

    from backups.offsite.restic import Repository

    scale = float(os.environ.get("DS_BENCH_BACKUP_SCALE", "1.0"))
    work = Path(tempfile.mkdtemp(prefix="ds-bench-offsite-"))
    saved = settings.DS_DATA_DIR
    settings.DS_DATA_DIR = str(work / "ds-data")  # the tree lives under DS_DATA_DIR/backups
    try:
        _run(work, scale, Repository)
    finally:
        settings.DS_DATA_DIR = saved
        shutil.rmtree(work, ignore_errors=True)


def _hand(repo: Path, pw: Path, path: Path, cache: Path) -> float:
    env = {"PATH": os.environ["PATH"], "HOME": str(cache), "TZ": "UTC"}
    base = ["restic", "-r", str(repo), "--password-file", str(pw), "--cache-dir", str(cache)]
    subprocess.run([*base, "init"], env=env, check=True, capture_output=True)
    drop_caches()
    t0 = time.perf_counter()
    subprocess.run([*base, "backup", str(path)], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def _staged_tree(data: Path, work: Path, backup_id: str) -> float:
    """A backup's staging copy of `data` (hashed into metadata), moved into the off-site tree
    as the backup job does; returns the seconds the tree update took."""
    from backups.format.archive import hash_files
    from backups.format.metadata import FileRecord, Metadata
    from backups.offsite import tree

    staging = work / f"staging-{backup_id}"
    shutil.copytree(data, staging)
    files, folders = [], []
    for path in sorted(staging.rglob("*")):
        rel = path.relative_to(staging).as_posix()
        if path.is_dir():
            folders.append(rel)
        else:
            files.append(FileRecord(rel, path.stat().st_size, "", path.stat().st_mtime))
    meta = Metadata("bench", "app", "Bench", "1.0.0", 0, "now", hash_files(staging, files), folders)
    drop_caches()
    t0 = time.perf_counter()
    with tree.locked("bench"):
        tree.update("bench", backup_id, staging, meta)
    took = time.perf_counter() - t0
    shutil.rmtree(staging)
    return took


def _timed_backup(repo, paths, tags) -> tuple[float, int, dict]:
    ticks = []
    drop_caches()
    t0 = time.perf_counter()
    repo.backup(paths, tags, progress=lambda f, _m: ticks.append(f))
    took = time.perf_counter() - t0
    return took, len(ticks), repo.last_summary


def _run(work: Path, scale: float, Repository) -> None:
    from statistics import median

    from backups.offsite import tree

    data = work / "data"
    data.mkdir()
    t0 = time.perf_counter()
    generate(data, scale)
    files, size = du(data)
    mb = size / 1024**2
    print(f"data: {files} files, {mb:.0f} MB (generated in "
          f"{time.perf_counter() - t0:.0f}s); {ROUNDS} rounds, medians", flush=True)  # fmt: skip
    pw = work / "pw"
    pw.write_text(PASSWORD)
    tags = ["appspace=bench", "kind=scheduled", tree.TAG]
    the_tree = tree.tree_dir("bench")
    rows: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    note("update_first", _staged_tree(data, work, "0"))
    for n in range(ROUNDS):
        # A fresh repository each round for both: the first copy, then the second.
        # Alternating which runs first, so neither is always the one after the other.
        hand = (work / f"repo-hand-{n}", pw, the_tree, work / f"cache-hand-{n}")
        if n % 2 == 0:
            note("hand", _hand(*hand))
        repo = Repository(
            str(work / f"repo-{n}"), pw, env=dict(os.environ), cache_dir=work / f"c{n}"
        )
        repo.ensure()
        took, ticks, summary = _timed_backup(repo, [the_tree], [*tags, f"backup={n}a"])
        if n % 2 == 1:
            note("hand", _hand(*hand))
        note("ours", took)
        note("ticks", ticks)
        note("added_first", summary.get("data_added", 0))
        t0 = time.perf_counter()
        repo.run("cat", "config")
        note("fixed", time.perf_counter() - t0)
        changed = change_one_percent(data, seed=11 + n)
        note("update_second", _staged_tree(data, work, f"{n}b"))
        took, _, summary = _timed_backup(repo, [the_tree], [*tags, f"backup={n}b"])
        note("again", took)
        note("added", summary.get("data_added", 0))
        note("files_changed", summary.get("files_changed", 0))
        print(f"  round {n + 1}: by hand {rows['hand'][-1]:.2f}s, copy {rows['ours'][-1]:.2f}s, "
              f"second {took:.2f}s", flush=True)  # fmt: skip
        shutil.rmtree(work / f"repo-hand-{n}")
        shutil.rmtree(work / f"repo-{n}")
    m = {k: median(v) for k, v in rows.items()}
    print(f"tree update from the staging copy: first {m['update_first']:.2f}s, after 1% "
          f"changed {m['update_second']:.2f}s (part of the local backup)")  # fmt: skip
    print(f"restic backup by hand (the tree): {m['hand']:.2f}s ({mb / m['hand']:.0f} MB/s)")
    print(f"off-site copy (Repository.backup of the tree): {m['ours']:.2f}s, "
          f"{m['ticks']:.0f} progress updates, {m['added_first'] / MB:.0f} MB added")  # fmt: skip
    print(f"  ratio off-site copy / restic by hand: {m['ours'] / m['hand']:.2f} (target <= 1.1)")
    print(f"second copy after {changed} files (1%) changed: {m['again']:.2f}s, "
          f"{m['files_changed']:.0f} files read again, {m['added'] / MB:.2f} MB added")  # fmt: skip
    print(f"  ratio second / first: time {m['again'] / m['ours']:.2f}, bytes added "
          f"{m['added'] / max(m['added_first'], 1):.4f} (target <= 0.1)")  # fmt: skip
    rest = max(m["again"] - m["fixed"], 0)
    print(f"  restic's fixed cost per run (cat config: the key's scrypt KDF, the index): "
          f"{m['fixed']:.2f}s; the rest of the second copy (walking the tree, reading the "
          f"changed files, writing): {rest:.2f}s, ratio to the first "
          f"{rest / m['ours']:.2f}")  # fmt: skip
    _former_format(work, data, pw, Repository)


def _former_format(work: Path, data: Path, pw: Path, Repository) -> None:
    """The same two copies sent as zstd archives (the format before trees), for comparison."""
    repo = Repository(str(work / "repo-archive"), pw, env=dict(os.environ), cache_dir=work / "c2")
    repo.ensure()
    first = work / "first.tar.zst"
    archive(data, first)
    one, _, summary = _timed_backup(repo, [first], ["appspace=bench", "backup=a1"])
    added_first = summary.get("data_added", 0)
    change_one_percent(data, seed=12)
    second = work / "second.tar.zst"
    archive(data, second)
    first.unlink()
    two, _, summary = _timed_backup(repo, [second], ["appspace=bench", "backup=a2"])
    added = summary.get("data_added", 0)
    print(f"former format (zstd archive, {second.stat().st_size / 1024**2:.0f} MB): first "
          f"{one:.2f}s, second {two:.2f}s (ratio {two / one:.2f}), bytes added "
          f"{added / 1024**2:.1f} MB (ratio {added / max(added_first, 1):.3f})")  # fmt: skip
