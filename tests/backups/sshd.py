"""A real OpenSSH server on a free loopback port, for the off-site tests over SFTP.

`start_sshd(folder)` -> Sshd: its own host key, its own sshd_config (listening on 127.0.0.1
only, public keys only, no forwarding, sessions forced to the internal sftp server, no chroot),
a client key generated here and authorised for the current user (the suite runs as root), and
a known_hosts file that pins this server's host key, as an admin writes one. The repository
folder is `sshd.home / "repo"`; `sshd.location(path)` is the restic repository string.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    proc: subprocess.Popen
    port: int
    user: str
    home: Path  # the user's folder for the repositories, under the test's tmp dir
    client_key: Path
    known_hosts: Path  # pins this server's host key
    host_key: Path
    log: Path

    def location(self, path: Path | str) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}/{Path(path).as_posix()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            return conn.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def start_sshd(folder: Path) -> Sshd:
    if not Path(SSHD).is_file():
        pytest.fail("sshd is missing: scripts/system-deps.sh test installs openssh-server")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    _keygen(host_key, "dropserver-test-sshd")
    _keygen(client_key, "dropserver-test-client")
    (folder / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    home = folder / "home"
    home.mkdir(mode=0o700)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user = getpass.getuser()
    config = folder / "sshd_config"
    config.write_text(
        f"""ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {folder / "sshd.pid"}
AuthorizedKeysFile {folder / "authorized_keys"}
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
DisableForwarding yes
PermitTTY no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
"""
    )
    # Debian's sshd wants its privilege separation folder (the package makes it at boot only).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = folder / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )
    known_hosts = folder / "known_hosts"
    pub = Path(f"{host_key}.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    server = Sshd(proc, port, user, home, client_key, known_hosts, host_key, log)
    deadline = time.monotonic() + 20
    while not _banner(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"sshd did not start: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    return server


@pytest.fixture
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def listeners(pid: int) -> list[str]:
    """The TCP addresses process `pid` listens on, from the host's socket table."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


__all__ = ["Sshd", "listeners", "sshd", "start_sshd"]
