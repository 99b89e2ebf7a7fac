"""Helpers for the TLS edge tests: throwaway certificates, a local ACME CA (Debian's pebble),
and TLS clients that verify against a given root."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.sandbox.fixtures import poll
from tests.site.processes import free_port

NOW = dt.datetime.now(dt.UTC)


def self_signed(
    directory: Path,
    name: str,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """A self-signed CA-capable certificate and its key, as PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def client_context(root_pem: str | Path) -> ssl.SSLContext:
    """What a browser that trusts only this root does: verify the chain and the name."""
    context = ssl.create_default_context(cafile=None)
    context.load_verify_locations(cadata=Path(root_pem).read_text())
    context.set_alpn_protocols(["http/1.1"])
    return context


def https_get(
    port: int, host: str, path: str, context: ssl.SSLContext, *, host_header: str = ""
) -> http.client.HTTPResponse:
    """GET over TLS to 127.0.0.1:port, with SNI and Host `host`: the chain and the name are
    checked by `context` as a browser would."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    tls = context.wrap_socket(sock, server_hostname=host)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host_header or f'{host}:{port}'}"]
    lines.append("Connection: close")
    tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = http.client.HTTPResponse(tls)
    response.begin()
    response.body = response.read()
    response.peer_cert = tls.getpeercert()
    tls.close()
    return response


def http_get(port: int, host: str, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": f"{host}:{port}"})
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


@dataclass
class Pebble:
    """Pebble (an ACME CA for tests) and its DNS stub, both on loopback only.

    Every name resolves to 127.0.0.1 through pebble-challtestsrv's DNS, so Pebble validates
    HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of this host: the edge's ports.
    """

    directory: str
    ca_root: Path  # the root of Pebble's own HTTPS listener (DS_ACME_CA_ROOT)
    management_port: int
    processes: list[subprocess.Popen]

    def issuing_root(self) -> str:
        """The root Pebble signs certificates with (made at start, served by its management API)."""
        context = ssl.create_default_context(cafile=str(self.ca_root))
        conn = http.client.HTTPSConnection("127.0.0.1", self.management_port, context=context)
        conn.request("GET", "/roots/0")
        return conn.getresponse().read().decode()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start_pebble(workdir: Path, *, http_port: int, tls_port: int) -> Pebble:
    for tool in ("pebble", "pebble-challtestsrv"):
        assert shutil.which(tool), f"{tool} missing: apt-get install -y pebble"
    cert, key = self_signed(workdir, "pebble-listener", dns=("localhost",), ips=("127.0.0.1",))
    acme_port, management_port, dns_port, stub_port = (free_port() for _ in range(4))
    config = workdir / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{management_port}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    logs = workdir / "pebble.log"
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    with open(logs, "ab") as log:
        dns = subprocess.Popen(
            [
                "pebble-challtestsrv",
                f"-dns01=127.0.0.1:{dns_port}",
                "-http01=",
                "-https01=",
                "-tlsalpn01=",
                f"-management=127.0.0.1:{stub_port}",
                "-defaultIPv4=127.0.0.1",
                "-defaultIPv6=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        pebble = subprocess.Popen(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    found = Pebble(f"https://127.0.0.1:{acme_port}/dir", cert, management_port, [dns, pebble])

    def listening() -> bool:
        assert pebble.poll() is None and dns.poll() is None, logs.read_text()
        try:
            socket.create_connection(("127.0.0.1", acme_port), timeout=1).close()
            return True
        except OSError:
            return False

    poll(listening, timeout=20, interval=0.05)
    return found
