"""The relay's rules without a sandbox: which request heads pass and what is kept of them, the
spec fields and Deno's flags for relay hosts, which allowlist entries are appspace hosts of
this instance, and where the relay sends requests with and without the TLS edge. The live
path (real sandboxes, the real gateway) is tests/gateway/test_relay.py."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from packages.allowlist import AllowlistError, InstanceHosts, parse_server_entry
from sandbox.spec import Limits, SandboxSpec, SpecError
from sandbox.walls import launcher
from sandbox.walls.relay import Refused, parse_head, pinned_host

HOSTS = {"b.example.test"}
PORTS = {80, 443, 8000}


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode() + b"\r\n"


def test_a_request_to_an_allowed_host_keeps_only_what_an_outside_client_may_say():
    method, name, path, kept, length = parse_head(
        head(
            "POST http://B.example.test:8000/x/y?q=1 HTTP/1.1\n"
            "Host: panel.example.test\n"
            "Cookie: ds_appspace=stolen\n"
            "X-Forwarded-For: 203.0.113.9\n"
            "X-Forwarded-Proto: https\n"
            "Forwarded: for=203.0.113.9\n"
            "X-Real-IP: 203.0.113.9\n"
            "Via: 1.1 somewhere\n"
            "X-Dropserver-User-Id: forged\n"
            "Proxy-Authorization: Basic eA==\n"
            "Connection: keep-alive, X-Secret-Hop\n"
            "X-Secret-Hop: 1\n"
            "Authorization: Bearer issued-by-b\n"
            "X-App: kept\n"
            "Content-Length: 5\n"
        ),
        HOSTS,
        PORTS,
    )
    assert (method, name, path, length) == ("POST", "b.example.test", "/x/y?q=1", 5)
    assert kept == [
        ("Authorization", "Bearer issued-by-b"),
        ("X-App", "kept"),
        ("Content-Length", "5"),
    ]
    assert pinned_host("b.example.test", 8000) == "b.example.test:8000"
    assert pinned_host("b.example.test", 443) == "b.example.test"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("GET http://c.example.test:8000/ HTTP/1.1\n", 403),
        ("GET http://b.example.test:9999/ HTTP/1.1\n", 403),
        ("GET http://127.0.0.1:8000/ HTTP/1.1\nHost: b.example.test\n", 403),
        ("GET http://user@b.example.test/ HTTP/1.1\n", 403),
        ("GET https://b.example.test/ HTTP/1.1\n", 403),
        ("GET /x HTTP/1.1\nHost: b.example.test\n", 403),
        ("CONNECT b.example.test:443 HTTP/1.1\n", 403),
        ("TRACE http://b.example.test/ HTTP/1.1\n", 405),
        ("GET http://b.example.test/ HTTP/2\n", 400),
        ("GET http://b.example.test/a#frag HTTP/1.1\n", 400),
        ("GET http://b.example.test/ HTTP/1.1\n folded: header\n", 400),
        ("GET http://b.example.test/ HTTP/1.1\nbad header\n", 400),
        ("GET http://b.example.test/ HTTP/1.1\nX-A: a\x01b\n", 400),
        ("POST http://b.example.test/ HTTP/1.1\nTransfer-Encoding: chunked\n", 411),
        ("POST http://b.example.test/ HTTP/1.1\nContent-Length: 1\nContent-Length: 2\n", 400),
        ("POST http://b.example.test/ HTTP/1.1\nContent-Length: -1\n", 400),
        ("GET http://b.example.test/ HTTP/1.1\nUpgrade: websocket\n", 403),
    ],
    ids=lambda value: value if isinstance(value, int) else value.split("\n")[0][:40],
)
def test_what_the_relay_refuses(raw, status):
    with pytest.raises(Refused) as caught:
        parse_head(head(raw), HOSTS, PORTS)
    assert caught.value.status == status


def test_too_many_headers_are_refused():
    raw = "GET http://b.example.test/ HTTP/1.1\n" + "X-A: 1\n" * 101
    with pytest.raises(Refused) as caught:
        parse_head(head(raw), HOSTS, PORTS)
    assert caught.value.status == 431


@pytest.fixture
def spec(ds_data_dir) -> SandboxSpec:
    return SandboxSpec.for_appspace(
        appspace_id="as-1",
        app_id="app-1",
        version="1.0.0",
        uid=200123,
        limits=Limits(memory_mb=128, cpu_percent=50, pids=64, tmpfs_mb=8, heap_mb=96),
        relay_hosts=("b.example.test:8000",),
        relay_upstream="127.0.0.1:8000",
        relay_public_port=8000,
    )


def test_relay_hosts_reach_deno_as_names_and_leave_the_network_namespace_empty(spec):
    argv = launcher.bwrap_argv(spec, "appspace")
    assert "--unshare-net" in argv[: argv.index("--")]  # no server allowlist: no network
    deno = argv[argv.index("--") + 1 :]
    nets = next(a for a in deno if a.startswith("--allow-net="))[len("--allow-net=") :]
    assert nets.split(",") == [
        "unix:/run/ds/http.sock",
        "unix:/run/ds/relay.sock",
        "b.example.test:8000",
    ]
    assert any(a.startswith("--deny-net=") and "127.0.0.0/8" in a for a in deno)
    reads = next(a for a in deno if a.startswith("--allow-read="))
    writes = next(a for a in deno if a.startswith("--allow-write="))
    assert "/run/ds/relay.sock" in reads and "/run/ds/relay.sock" in writes
    config = json.loads(deno[-1])
    assert config["relay"] == {"socket": "/run/ds/relay.sock", "hosts": ["b.example.test"]}
    assert SandboxSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "fields",
    [
        {"relay_hosts": ("*.example.test",)},
        {"relay_hosts": ("b.example.test",), "relay_upstream": ""},
        {"relay_hosts": ("b.example.test",), "relay_upstream": "gateway:8000"},
        {"relay_hosts": ("b.example.test",), "relay_upstream": "127.0.0.1"},
        {"relay_hosts": ("b.example.test",), "relay_public_port": 0},
        {"relay_hosts": ("b.example.test:0",)},
    ],
    ids=["wildcard", "no-upstream", "upstream-name", "upstream-no-port", "no-port", "port-0"],
)
def test_bad_relay_fields_are_refused(spec, fields):
    data = {**spec.to_json(), **fields}
    data["relay_hosts"] = list(data["relay_hosts"])
    with pytest.raises(SpecError):
        SandboxSpec.from_json(data)


INSTANCE = InstanceHosts(domain="localhost", panel="dropid.localhost", port=8000)


@pytest.mark.parametrize(
    ("text", "instance"),
    [
        ("b.localhost", True),
        ("b.localhost:8000", True),
        ("api.example.com", False),
        ("*.example.com", False),
    ],
)
def test_appspace_hosts_of_this_instance_are_allowed_and_marked(text, instance):
    assert parse_server_entry(text, instance=INSTANCE).instance is instance


@pytest.mark.parametrize(
    "text",
    [
        "dropid.localhost",
        "dropid.localhost:8000",
        "b.localhost:9000",
        "x.b.localhost",
        "*.localhost",
        "localhost",
        "127.0.0.1:8000",
    ],
)
def test_the_panel_and_the_rest_of_this_machine_stay_refused(text):
    with pytest.raises(AllowlistError):
        parse_server_entry(text, instance=INSTANCE)
    with pytest.raises(AllowlistError):
        parse_server_entry(text)  # without the instance, local names are refused as before


def test_the_relay_goes_to_daphne_itself_with_or_without_the_tls_edge(settings):
    from appspaces.sandboxes import gateway_address

    with override_settings(DS_TLS_ON=False, DS_BIND="0.0.0.0", DS_PORT=8123):
        assert gateway_address() == "127.0.0.1:8123"
    with override_settings(DS_TLS_ON=False, DS_BIND="192.0.2.7", DS_PORT=8123):
        assert gateway_address() == "192.0.2.7:8123"
    with override_settings(DS_TLS_ON=False, DS_BIND="::", DS_PORT=8123):
        assert gateway_address() == "[::1]:8123"
    with override_settings(DS_TLS_ON=True, DS_BIND="0.0.0.0", DS_PORT=80, DS_WEB_PORT=8001):
        assert gateway_address() == "127.0.0.1:8001"
