"""Caddy's config, written as its native JSON from the settings (no Caddyfile in between).

Two servers: `https` on DS_HTTPS_PORT proxies every host to Daphne on loopback (Host kept;
Caddy sets X-Forwarded-For/-Proto itself and ignores what clients send, since it trusts no
proxy), and `http` on DS_PORT answers ACME HTTP-01 challenges and redirects everything else
to https on the same host. Certificates: on demand for `acme` and `internal`, each one
authorised by the ask endpoint (edge/ask.py) before Caddy requests it; from the admin's files
for `files`. HSTS is not set here: the panel (Django) and the gateway set it on every answer,
so setting it here too would send it twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings

ASK_PATH = "/.well-known/dropserver/tls-ask"
INTERNAL_PATH_PREFIX = "/.well-known/dropserver/"
INTERNAL_CA = "local"


def tls_dir() -> Path:
    return Path(settings.DS_DATA_DIR) / "tls"


def config_path() -> Path:
    return tls_dir() / "caddy.json"


def storage_dir() -> Path:
    """Caddy's own storage: account keys, certificates, the internal CA (0700)."""
    return tls_dir() / "caddy"


def internal_root_path() -> Path:
    """Where DS_TLS=internal publishes its CA's root certificate for browsers and clients."""
    return tls_dir() / "internal-root.crt"


def _caddy_internal_root() -> Path:
    return storage_dir() / "pki" / "authorities" / INTERNAL_CA / "root.crt"


def _listen(bind: str, port: int) -> str:
    # "0.0.0.0" and "::" mean every address; Caddy's ":port" covers both families.
    host = "" if bind in ("", "0.0.0.0", "::") else bind
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def _issuers() -> list[dict[str, Any]]:
    if settings.DS_TLS == "internal":
        return [{"module": "internal", "ca": INTERNAL_CA}]
    issuer: dict[str, Any] = {"module": "acme", "ca": settings.DS_ACME_DIRECTORY}
    if settings.DS_ACME_EMAIL:
        issuer["email"] = settings.DS_ACME_EMAIL
    if settings.DS_ACME_CA_ROOT:
        issuer["trusted_roots_pem_files"] = [str(Path(settings.DS_ACME_CA_ROOT).resolve())]
    return [issuer]


def build_config(*, http_port: int, https_port: int, web_port: int, bind: str) -> dict:
    """The whole Caddy config for this instance's settings and these ports."""
    upstream = f"127.0.0.1:{web_port}"
    port_suffix = "" if https_port == 443 else f":{https_port}"
    https_server = {
        "listen": [_listen(bind, https_port)],
        "protocols": ["h1", "h2"],
        "routes": [
            {
                # The ask endpoint and its kin answer Caddy on loopback, never the internet.
                "match": [{"path": [INTERNAL_PATH_PREFIX + "*"]}],
                "handle": [{"handler": "static_response", "status_code": 404, "body": "Not Found"}],
                "terminal": True,
            },
            {
                "handle": [
                    # Like Daphne's --no-server-name: no product banner.
                    {"handler": "headers", "response": {"deferred": True, "delete": ["Server"]}},
                    {
                        "handler": "reverse_proxy",
                        "upstreams": [{"dial": upstream}],
                        "flush_interval": -1,  # stream as the app answers, do not buffer
                    },
                ]
            },
        ],
        "tls_connection_policies": [{}],
        "automatic_https": {"disable_redirects": True},
    }
    http_server = {
        "listen": [_listen(bind, http_port)],
        "protocols": ["h1"],
        "routes": [
            {
                "handle": [
                    {
                        "handler": "static_response",
                        "status_code": 308,
                        "headers": {
                            "Location": [
                                f"https://{{http.request.host}}{port_suffix}{{http.request.uri}}"
                            ],
                            "Connection": ["close"],
                        },
                    }
                ]
            }
        ],
        "automatic_https": {"disable": True},
    }
    tls_app: dict[str, Any]
    if settings.DS_TLS == "files":
        tls_app = {
            "certificates": {
                "load_files": [
                    {
                        "certificate": str(Path(settings.DS_TLS_CERT).resolve()),
                        "key": str(Path(settings.DS_TLS_KEY).resolve()),
                    }
                ]
            },
        }
        # Nothing to obtain: the admin brings the certificate (a wildcard, typically).
        https_server["automatic_https"] = {"disable": True}
    else:
        tls_app = {
            "automation": {
                "policies": [{"issuers": _issuers(), "on_demand": True}],
                "on_demand": {"ask": f"http://{upstream}{ASK_PATH}"},
            }
        }
    return {
        "admin": {"disabled": True},
        "storage": {"module": "file_system", "root": str(storage_dir())},
        "logging": {"logs": {"default": {"level": "INFO"}}},
        "apps": {
            "http": {
                "http_port": http_port,
                "https_port": https_port,
                "servers": {"https": https_server, "http": http_server},
            },
            "tls": tls_app,
            # The internal CA's root is published to a file; never added to this host's trust.
            "pki": {"certificate_authorities": {INTERNAL_CA: {"install_trust": False}}},
        },
    }


def write_config(*, owner: tuple[int, int] | None = None, **ports: Any) -> Path:
    """Write the config (and make Caddy's directories) and return its path.

    `owner` (uid, gid): the user Caddy will run as, when it is not the one writing (root
    dropping the edge to an unprivileged user): it gets the tls/ directory, Caddy's storage
    and the config, since Caddy writes certificates, locks and its autosave there.
    """
    tls_dir().mkdir(parents=True, exist_ok=True)
    tls_dir().chmod(0o711)  # internal-root.crt is for anyone; the rest is 0700/0600
    storage_dir().mkdir(mode=0o700, exist_ok=True)
    path = config_path()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(build_config(**ports), indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    if owner is not None:
        for item in (tls_dir(), path, *_tree(storage_dir())):
            os.chown(item, *owner, follow_symlinks=False)
    return path


def _tree(root: Path) -> list[Path]:
    return [root, *root.rglob("*")]


def caddy_argv() -> list[str]:
    return [settings.DS_CADDY, "run", "--config", str(config_path())]


def caddy_env(base: dict[str, str]) -> dict[str, str]:
    """Caddy's environment: its autosave and data directories under DS_DATA_DIR/tls, not $HOME."""
    home = str(tls_dir())
    return dict(base, HOME=home, XDG_CONFIG_HOME=home, XDG_DATA_HOME=home)


def export_internal_root() -> bool:
    """Copy the internal CA's root to DS_DATA_DIR/tls/internal-root.crt once Caddy made it;
    True when the published file is current."""
    source, target = _caddy_internal_root(), internal_root_path()
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        return False
    if target.is_file() and target.read_bytes() == data:
        return True
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)  # a public certificate, meant to be handed out
    tmp.replace(target)
    return True


def caddy_available() -> str | None:
    """A readable reason when the Caddy binary is missing, else None."""
    path = settings.DS_CADDY
    if os.sep in path and os.access(path, os.X_OK):
        return None
    if os.sep not in path and shutil.which(path):
        return None
    return (
        f"DS_TLS={settings.DS_TLS} needs Caddy at {path}: install it with "
        "`apt-get install -y caddy` (or set DS_CADDY)."
    )
