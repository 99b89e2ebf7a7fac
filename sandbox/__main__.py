"""`python -m sandbox`: the supervisor without loading Django's app registry (starts in ~0.3 s).

Same as `manage.py sandboxd`; only `django.conf.settings` is needed, not the ORM or the apps.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dropserver_site.settings")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from sandbox import daemon

    try:
        daemon.run()
    except daemon.AlreadyRunning as exc:
        print(f"sandboxd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
