"""Fixtures of the site tests that run the platform: `served_tls` (`serve` with DS_TLS=internal
on free high ports, embedded defaults) yields (process, (http, https, web) ports, the published
root, a function returning the output so far, the environment). Parametrize it indirectly with
a dict to add to serve's environment (another DS_DOMAIN, say); with `AS_UNITS: True` in it, the
platform runs as deploy/systemd/ runs it instead (tests/site/units.py; the process is then the
web unit's, `serve_web`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.sandbox.fixtures import poll
from tests.site.processes import free_port
from tests.site.test_serve import BASE_DIR, embedded_env
from tests.site.units import run_as_units


def internal_tls_env(data_dir) -> tuple[dict[str, str], tuple[int, int, int]]:
    """Embedded defaults with DS_TLS=internal on free loopback ports: (env, (http, https, web))."""
    http_port, https_port, web_port = free_port(), free_port(), free_port()
    env = embedded_env(data_dir, http_port)
    env.update(
        DS_TLS="internal",
        DS_HTTPS_PORT=str(https_port),
        DS_WEB_PORT=str(web_port),
        DS_BIND="127.0.0.1",
    )
    return env, (http_port, https_port, web_port)


AS_UNITS = "as-units"


@pytest.fixture
def served_tls(request, ds_data_dir):
    env, (http_port, https_port, web_port) = internal_tls_env(ds_data_dir)
    param = dict(getattr(request, "param", {}))
    as_units = param.pop(AS_UNITS, False)
    env.update(param)
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    if as_units:
        with run_as_units(env, ds_data_dir) as web:
            root = ds_data_dir / "tls" / "internal-root.crt"
            poll(root.is_file, timeout=10)
            output = (ds_data_dir / "serve_web.log").read_text
            yield web, (http_port, https_port, web_port), root, output, env
        return
    log = ds_data_dir / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*manage, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)

    def output() -> str:
        return log.read_text(errors="replace")

    try:
        poll(lambda: proc.poll() is not None or "Press Ctrl-C to stop." in output(), timeout=90)
        assert proc.poll() is None, output()
        root = ds_data_dir / "tls" / "internal-root.crt"
        poll(root.is_file, timeout=10)
        yield proc, (http_port, https_port, web_port), root, output, env
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
