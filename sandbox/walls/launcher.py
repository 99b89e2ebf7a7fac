"""Builds the argv that starts one sandbox: bubblewrap's filesystem view, then Deno's flags.

Pure functions of a spec plus a few host facts (Deno's path and shared libraries, this host's
addresses), so they are unit-tested without starting anything. `sandbox.walls.spawn` runs
the result.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sandbox import layout
from sandbox.spec import SandboxSpec
from sandbox.walls import mounts

MODES = ("app-init", "appspace", "migrate", "warm")

# Never reachable from a sandbox, even through an allowlisted name that resolves there: Deno
# checks --deny-net against resolved addresses. Deno 2.9.8 accepts CIDR for IPv4 only; IPv6 is
# denied address by address (loopback, unspecified, cloud metadata, this host's own addresses).
DENY_NET_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "169.254.169.254",
)
DENY_NET_V6 = ("[::1]", "[::]", "[fd00:ec2::254]")

DENO_ENV = {
    "DENO_DIR": layout.SANDBOX_CACHE,
    "NO_COLOR": "1",
    "DENO_NO_UPDATE_CHECK": "1",  # the update check would open a connection outside --allow-net
    "DENO_NO_PROMPT": "1",
}
# Deno's SQLite caches (V8 code cache, module analysis) copied into each sandbox's /cache.
CACHE_DATABASES = ("v8_code_cache_v2", "dep_analysis_cache_v2", "node_analysis_cache_v2")
CACHE_TMPFS_BYTES = mounts.CACHE_TMPFS_BYTES
# Offline, self-contained: no deno.json/lock from the app folder, no downloads of any kind.
DENO_COMMON = ["--no-config", "--no-lock", "--no-remote", "--no-npm"]


@dataclass(frozen=True)
class View:
    """Paths as the Deno process sees them: fixed in-sandbox paths, or host paths when the
    unsafe development mode runs Deno without bubblewrap."""

    app: str
    data: str
    meta: str
    cache: str
    harness: str
    run: str
    deno: str

    @property
    def socket(self) -> str:
        return f"{self.run}/{layout.SOCKET_NAME}"

    @property
    def relay(self) -> str:
        return f"{self.run}/{layout.RELAY_NAME}"


SANDBOX_VIEW = View(
    app=layout.SANDBOX_APP,
    data=layout.SANDBOX_DATA,
    meta=layout.SANDBOX_META,
    cache=layout.SANDBOX_CACHE,
    harness=layout.SANDBOX_HARNESS,
    run=layout.SANDBOX_RUN,
    deno=layout.SANDBOX_DENO,
)


def host_view(spec: SandboxSpec) -> View:
    return View(
        app=spec.app_dir,
        data=spec.data_dir or "",
        meta=spec.meta_dir or "",
        cache=spec.cache_dir,
        harness=str(layout.HARNESS_DIR),
        run=str(layout.sandbox_run_dir(spec.id)),
        deno=deno_path(),
    )


def deno_path() -> str:
    """The pinned Deno from the `deno` PyPI package, never whatever is on PATH."""
    if configured := getattr(settings, "DS_SANDBOX_DENO", ""):
        return configured
    from deno import find_deno_bin

    return str(find_deno_bin())


@functools.lru_cache(maxsize=4)
def shared_libraries(binary: str) -> tuple[str, ...]:
    """The libraries `binary` loads (from ldd), so the sandbox holds those and not all of /usr."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs: list[str] = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the ELF interpreter, e.g. /lib64/ld-linux-x86-64.so.2
    return tuple(dict.fromkeys(libs))


def host_addresses() -> list[str]:
    """This host's own interface addresses (IPv4 from fib_trie LOCAL, IPv6 from if_inet6)."""
    found: set[str] = set()
    try:
        previous = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            if "/32 host LOCAL" in line and previous:
                found.add(previous)
            parts = line.split()
            previous = parts[1] if len(parts) >= 2 and parts[0] in ("|--", "+--") else ""
    except OSError:
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        pass
    valid = []
    for addr in sorted(found):
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        valid.append(f"[{ip}]" if ip.version == 6 else str(ip))
    return valid


def deny_net_entries() -> list[str]:
    return list(dict.fromkeys([*DENY_NET_V4, *DENY_NET_V6, *host_addresses()]))


def deno_argv(spec: SandboxSpec, mode: str, view: View, args: dict | None = None) -> list[str]:
    """Deno's command line for `mode`; `args` carries migrate's {"from", "to"}."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    import_map = f"--import-map={view.harness}/import_map.json"
    main = f"{view.harness}/main.ts"
    entry = f"{view.app}/{spec.entrypoint}"
    if mode == "warm":
        # `deno cache` emits the transpiled modules into DENO_DIR without running any app code.
        return [view.deno, "cache", *DENO_COMMON, import_map, main, entry]

    has_data = spec.data_dir is not None and mode != "app-init"
    reads = [view.app, view.harness]
    writes: list[str] = []
    nets: list[str] = []
    if has_data:
        reads.append(view.data)
        if not spec.data_readonly:
            writes.append(view.data)
    if spec.meta_dir is not None and mode != "app-init":
        reads.append(view.meta)
    if mode == "appspace":
        # Deno 2.9 needs read + write on the socket path and net on unix:<path> to serve on it.
        reads.append(view.socket)
        writes.append(view.socket)
        nets = [f"unix:{view.socket}", *spec.allow_net]
        if spec.relay_hosts:
            # Appspace hosts of this instance: fetch goes through the relay socket (the harness
            # gives fetch a proxy client for them). Deno checks the name before proxying and
            # does not resolve it; a direct connection resolves it and meets --deny-net.
            reads.append(view.relay)
            writes.append(view.relay)
            nets += [f"unix:{view.relay}", *spec.relay_hosts]
    config: dict = {"mode": mode, "entry": f"file://{entry}"}
    if has_data:
        config["data"] = view.data
    if mode == "appspace":
        config["socket"] = view.socket
        config["meta"] = view.meta if spec.meta_dir is not None else None
        if spec.relay_hosts:
            names = sorted({h.rsplit(":", 1)[0] if ":" in h else h for h in spec.relay_hosts})
            config["relay"] = {"socket": view.relay, "hosts": names}
    if mode == "migrate":
        config["from"] = int((args or {}).get("from", 0))
        config["to"] = int((args or {}).get("to", 0))

    argv = [
        view.deno,
        "run",
        "--no-prompt",
        *DENO_COMMON,
        "--cached-only",
        f"--allow-read={','.join(reads)}",
    ]
    if writes:
        argv.append(f"--allow-write={','.join(writes)}")
    if nets:
        argv.append(f"--allow-net={','.join(nets)}")
        argv.append(f"--deny-net={','.join(deny_net_entries())}")
    argv += [
        f"--v8-flags=--max-old-space-size={spec.limits.heap_mb}",
        import_map,
        main,
        json.dumps(config, separators=(",", ":")),
    ]
    return argv


def network_allowed(spec: SandboxSpec, mode: str) -> bool:
    """Only a serving appspace with a non-empty allowlist shares the host's network namespace."""
    return mode == "appspace" and bool(spec.allow_net)


def bwrap_argv(
    spec: SandboxSpec,
    mode: str,
    args: dict | None = None,
    *,
    cache_fds: dict[str, int] | None = None,
    warming: bool = False,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The full command: bubblewrap building the sandbox's world, then Deno inside it.

    `seccomp_fd` holds the compiled filter of `sandbox.walls.seccomp`; bubblewrap loads it right
    before it execs Deno (the supervisor always passes one; None only in unit tests).

    The filesystem is `sandbox.walls.mounts.bwrap_mounts` (each mount and why). `/cache` is the warm
    job's own tmpfs while `warming`. Otherwise it is a small tmpfs holding the emit cache
    (`gen/`, bound read-only) and private copies of Deno's SQLite caches, passed as open files
    in `cache_fds` (name -> fd): Deno ignores a V8 code cache it cannot open read-write, and
    with it start-up is ~12 ms faster. Deno writes there (the app cannot: no write
    permission), and the copies vanish with the sandbox.
    """
    deno = deno_path()
    v = SANDBOX_VIEW
    argv = [
        settings.DS_SANDBOX_BWRAP,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",  # no nested user namespaces from inside
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
    ]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if not network_allowed(spec, mode):
        argv.append("--unshare-net")
    mount_argv, chdir = mounts.bwrap_mounts(
        spec,
        mode,
        deno=deno,
        libraries=shared_libraries(deno),
        cache_fds=cache_fds,
        warming=warming,
        network=network_allowed(spec, mode),
        etc_dir=sandbox_etc_dir(),
    )
    argv += [*mount_argv, "--chdir", chdir]
    for key, value in DENO_ENV.items():
        argv += ["--setenv", key, value]
    argv += ["--", *deno_argv(spec, mode, v, args)]
    return argv


def direct_argv(spec: SandboxSpec, mode: str, args: dict | None = None) -> tuple[list[str], dict]:
    """UNSAFE development mode without bubblewrap: Deno's permissions are the only wall."""
    view = host_view(spec)
    env = {**DENO_ENV, "DENO_DIR": spec.cache_dir, "PATH": "/usr/bin:/bin"}
    return deno_argv(spec, mode, view, args), env


def sandbox_etc_dir() -> Path:
    return layout.run_dir() / "etc"


def write_sandbox_etc() -> None:
    """/etc files for sandboxes with network: names resolve through DNS, and the host's own
    /etc/hosts (internal names) stays private. Root-owned, read-only in every sandbox."""
    etc = sandbox_etc_dir()
    etc.mkdir(parents=True, exist_ok=True)
    os.chmod(etc, 0o755)
    for name, text in {
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "nsswitch.conf": "hosts: files dns\n",
    }.items():
        path = etc / name
        if not path.exists() or path.read_text() != text:
            tmp = etc / f".{name}.tmp"
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
