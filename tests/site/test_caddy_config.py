"""The edge's Caddy config for each DS_TLS mode, checked by Caddy itself (`caddy validate`)."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from django.test import override_settings

from dropserver_site.edge import caddy
from tests.sandbox.fixtures import poll
from tests.site.processes import free_port
from tests.site.tls import client_context, self_signed

PORTS = {"http_port": 18080, "https_port": 18443, "web_port": 18081, "bind": "127.0.0.1"}


def validate(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [caddy.settings.DS_CADDY, "validate", "--config", str(path)],
        env=caddy.caddy_env({"PATH": "/usr/bin:/bin"}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def tls_settings(mode: str, tmp_path):
    extra = {}
    if mode == "files":
        cert, key = self_signed(tmp_path, "wild", dns=("*.localhost",))
        extra = {"DS_TLS_CERT": str(cert), "DS_TLS_KEY": str(key)}
    if mode == "acme":
        root, _ = self_signed(tmp_path, "private-ca")
        extra = {"DS_ACME_DIRECTORY": "https://127.0.0.1:9/dir", "DS_ACME_CA_ROOT": str(root)}
    return override_settings(DS_TLS=mode, DS_TLS_ON=True, **extra)


@pytest.mark.parametrize("mode", ["acme", "internal", "files"], ids=["acme", "internal", "files"])
def test_each_mode_writes_a_config_caddy_accepts(ds_data_dir, tmp_path, mode):
    with tls_settings(mode, tmp_path):
        path = caddy.write_config(**PORTS)
    assert path == ds_data_dir / "tls" / "caddy.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert caddy.storage_dir().stat().st_mode & 0o777 == 0o700
    result = validate(path)
    assert result.returncode == 0, result.stderr


def test_on_demand_certificates_are_asked_for_on_loopback(tmp_path):
    with tls_settings("acme", tmp_path):
        config = caddy.build_config(**PORTS)
    automation = config["apps"]["tls"]["automation"]
    assert automation["on_demand"]["ask"] == (
        "http://127.0.0.1:18081/.well-known/dropserver/tls-ask"
    )
    [policy] = automation["policies"]
    assert policy["on_demand"] is True
    [issuer] = policy["issuers"]
    assert issuer["module"] == "acme" and issuer["ca"] == "https://127.0.0.1:9/dir"
    assert issuer["trusted_roots_pem_files"] == [str((tmp_path / "private-ca.crt").resolve())]
    assert config["admin"] == {"disabled": True}  # no admin API for anyone on this host


def test_the_redirect_keeps_host_path_and_a_non_default_port(tmp_path):
    with tls_settings("internal", tmp_path):
        servers = caddy.build_config(**PORTS)["apps"]["http"]["servers"]
        default = caddy.build_config(**{**PORTS, "https_port": 443})["apps"]["http"]["servers"]
    location = servers["http"]["routes"][0]["handle"][0]["headers"]["Location"]
    assert location == ["https://{http.request.host}:18443{http.request.uri}"]
    assert default["http"]["routes"][0]["handle"][0]["headers"]["Location"] == [
        "https://{http.request.host}{http.request.uri}"
    ]
    assert servers["https"]["listen"] == ["127.0.0.1:18443"]
    proxy = servers["https"]["routes"][-1]["handle"][-1]
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:18081"}]
    # No HSTS from the edge: Django and the gateway send it once themselves.
    assert "Strict-Transport-Security" not in json.dumps(servers)


def test_every_address_means_both_families(tmp_path):
    with tls_settings("internal", tmp_path):
        servers = caddy.build_config(**{**PORTS, "bind": "0.0.0.0"})["apps"]["http"]["servers"]
    assert servers["https"]["listen"] == [":18443"] and servers["http"]["listen"] == [":18080"]


def test_files_mode_serves_the_brought_certificate(ds_data_dir, tmp_path):
    """Caddy itself with the `files` config: a handshake for an appspace host gets the admin's
    certificate, verified against it (no upstream needed for the handshake). OpenSSL matches
    no wildcard directly under a single label, so the name is listed too."""
    cert, key = self_signed(tmp_path, "brought", dns=("*.localhost", "notes.localhost"))
    ports = {**PORTS, "https_port": free_port(), "http_port": free_port(), "web_port": free_port()}
    with (
        tls_settings("files", tmp_path),
        override_settings(DS_TLS_CERT=str(cert), DS_TLS_KEY=str(key)),
    ):
        path = caddy.write_config(**ports)
    log = tmp_path / "caddy.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            caddy.caddy_argv(),
            env=caddy.caddy_env({"PATH": "/usr/bin:/bin"}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def handshake():
            assert process.poll() is None, log.read_text()
            try:
                sock = socket.create_connection(("127.0.0.1", ports["https_port"]), timeout=5)
            except OSError:
                return None
            with client_context(cert).wrap_socket(sock, server_hostname="notes.localhost") as tls:
                return tls.getpeercert()

        served = poll(handshake, timeout=30, interval=0.05)
        assert served["subjectAltName"] == (("DNS", "*.localhost"), ("DNS", "notes.localhost"))
        assert path.is_file()
    finally:
        process.terminate()
        process.wait(10)


def test_the_edge_files_can_be_given_to_the_user_caddy_runs_as(ds_data_dir, tmp_path):
    """The hook for an unprivileged edge: config and storage belong to that user."""
    uid, gid = 4_000_123, 4_000_456  # no such user needed: ownership is what the host sees
    with tls_settings("internal", tmp_path):
        caddy.write_config(**PORTS)
        (caddy.storage_dir() / "certificates").mkdir()
        path = caddy.write_config(owner=(uid, gid), **PORTS)
    for item in (path, path.parent, caddy.storage_dir(), caddy.storage_dir() / "certificates"):
        assert (item.stat().st_uid, item.stat().st_gid) == (uid, gid), item
    assert path.stat().st_mode & 0o777 == 0o600
