"""`python -m bench [name ...]`: runs every benchmark module of this package (or the named ones).

A benchmark module is any `bench/<name>.py` defining `run(options) -> None` (it prints its own
report). Add yours by dropping a module here; nothing else to register.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dropserver_site.settings")


def discover() -> list[str]:
    import bench

    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {discover()})")
    parser.add_argument("--iterations", type=int, default=30, help="samples per timing")
    parser.add_argument(
        "--max-sandboxes", type=int, default=100, help="stop the capacity run at this many"
    )
    options = parser.parse_args(argv)
    names = options.names or discover()
    unknown = set(names) - set(discover())
    if unknown:
        parser.error(f"unknown benchmarks: {sorted(unknown)}")
    import django

    django.setup()
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        module.run(options)
        print(f"({name}: {time.monotonic() - started:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
