"""The argv of a sandbox: bubblewrap's view and Deno's flags, checked without starting anything."""

from __future__ import annotations

import pytest

from sandbox import layout
from sandbox.spec import Limits, SandboxSpec, SpecError, validate_allow_net_entry
from sandbox.walls import launcher


@pytest.fixture
def spec(ds_data_dir) -> SandboxSpec:
    return SandboxSpec.for_appspace(
        appspace_id="as-1",
        app_id="app-1",
        version="1.0.0",
        uid=200123,
        limits=Limits(memory_mb=128, cpu_percent=50, pids=64, tmpfs_mb=8, heap_mb=96),
    )


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def deno_part(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1 :]


def test_bubblewrap_builds_a_minimal_world(spec):
    argv = launcher.bwrap_argv(spec, "appspace")
    outer = argv[: argv.index("--")]
    for flag in (
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--unshare-net",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--disable-userns",
    ):
        assert flag in outer
    assert outer[outer.index("--cap-drop") + 1] == "ALL"
    assert "--uid" not in outer and "--gid" not in outer  # bwrap runs *as* the uid instead
    ro = dict((dst, src) for src, dst in pairs(outer, "--ro-bind"))
    rw = dict((dst, src) for src, dst in pairs(outer, "--bind"))
    assert ro["/app"] == spec.app_dir and "/cache" not in ro and "/cache" not in rw
    assert outer[outer.index("/cache") - 1] == "--tmpfs"  # private copies, see below
    assert ro["/meta"] == spec.meta_dir and ro["/dropserver"] == str(layout.HARNESS_DIR)
    assert rw == {"/data": spec.data_dir, "/run/ds": str(layout.sandbox_run_dir(spec.id))}
    assert ro["/usr/bin/deno"] == launcher.deno_path()
    libs = launcher.shared_libraries(launcher.deno_path())
    assert any("libc.so" in lib for lib in libs)
    assert {lib for lib in libs} <= set(ro)
    assert not [d for d in ro if d in ("/usr", "/lib", "/etc", "/")]  # no wholesale host dirs
    size = outer.index("--size")
    assert outer[size + 1 : size + 4] == [str(8 * 2**20), "--tmpfs", "/tmp"]
    assert outer[outer.index("--chdir") + 1] == "/data"
    assert not [a for a in outer if "backups" in a]


def test_deno_gets_only_its_own_paths_and_socket(spec):
    deno = deno_part(launcher.bwrap_argv(spec, "appspace"))
    assert deno[:2] == ["/usr/bin/deno", "run"]
    for flag in (
        "--no-prompt",
        "--no-config",
        "--no-lock",
        "--no-remote",
        "--no-npm",
        "--cached-only",
    ):
        assert flag in deno
    flags = dict(a.split("=", 1) for a in deno if a.startswith("--") and "=" in a)
    assert flags["--allow-read"].split(",") == [
        "/app",
        "/dropserver",
        "/data",
        "/meta",
        "/run/ds/http.sock",
    ]
    assert flags["--allow-write"].split(",") == ["/data", "/run/ds/http.sock"]
    assert flags["--allow-net"] == "unix:/run/ds/http.sock"
    assert flags["--v8-flags"] == "--max-old-space-size=96"
    forbidden = (
        "--allow-all",
        "-A",
        "--allow-env",
        "--allow-run",
        "--allow-ffi",
        "--allow-sys",
        "--allow-import",
        "--unstable-worker-options",
    )
    assert not [a for a in deno if a.split("=")[0] in forbidden]


def test_an_allowlist_shares_the_network_with_deny_rules(spec):
    spec = SandboxSpec(**{**spec.__dict__, "allow_net": ("api.example.com:443", "*.example.org")})
    argv = launcher.bwrap_argv(spec, "appspace")
    outer, deno = argv[: argv.index("--")], deno_part(argv)
    assert "--unshare-net" not in outer
    assert "/etc/hosts" in [d for _, d in pairs(outer, "--ro-bind")]
    flags = dict(a.split("=", 1) for a in deno if "=" in a and a.startswith("--"))
    assert flags["--allow-net"] == "unix:/run/ds/http.sock,api.example.com:443,*.example.org"
    denied = flags["--deny-net"].split(",")
    for cidr in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
        "[::1]",
        "[fd00:ec2::254]",
    ):
        assert cidr in denied


def test_jobs_get_no_network_and_warm_alone_writes_the_cache(spec):
    init = launcher.bwrap_argv(spec, "app-init")
    assert "--unshare-net" in init
    assert "/data" not in [d for _, d in pairs(init, "--bind")]
    assert not [a for a in deno_part(init) if a.startswith(("--allow-net", "--allow-write"))]
    warm = launcher.bwrap_argv(spec, "warm", warming=True)
    assert "/cache" in [d for _, d in pairs(warm, "--bind")]
    assert deno_part(warm)[1] == "cache"
    migrate = deno_part(launcher.bwrap_argv(spec, "migrate", {"from": 1, "to": 3}))
    assert '"from":1' in migrate[-1] and '"to":3' in migrate[-1]
    assert not [a for a in migrate if a.startswith("--allow-net")]


@pytest.mark.parametrize(
    "entry",
    [
        "api.example.com",
        "api.example.com:443",
        "*.example.org",
        "*.example.org:8443",
        "localhost:8080",
        "8.8.8.8:53",
        "[2606:4700:4700::1111]:443",
    ],
)
def test_valid_allowlist_entries(entry):
    validate_allow_net_entry(entry)


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "*",
        "example",
        "10.0.0.1",
        "127.0.0.1:80",
        "[::1]:80",
        "169.254.169.254",
        "192.168.1.1:443",
        "1.2.3.0/24",
        "api.example.com:99999",
        "a b.com",
        "::1",
        "[fe80::1]",
        "*.*.com",
        "unix:/tmp/x",
    ],
)
def test_invalid_allowlist_entries(entry):
    with pytest.raises(SpecError):
        validate_allow_net_entry(entry)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "../x"),
        ("id", ""),
        ("id", "a" * 65),
        ("entrypoint", "../app.ts"),
        ("entrypoint", "/app.ts"),
        ("entrypoint", "app.py"),
        ("uid", True),
    ],
)
def test_invalid_specs(spec, field, value):
    with pytest.raises(SpecError):
        SandboxSpec(**{**spec.__dict__, field: value}).validate()


def test_a_spec_round_trips_through_json(spec):
    assert SandboxSpec.from_json(spec.to_json()) == spec
    with pytest.raises(SpecError, match="unknown"):
        SandboxSpec.from_json({**spec.to_json(), "privileged": True})


def test_each_sandbox_gets_its_own_copy_of_the_sqlite_caches(spec, tmp_path):
    gen = layout.app_cache_dir("app-1", "1.0.0") / "gen"
    gen.mkdir(parents=True)
    argv = launcher.bwrap_argv(spec, "appspace", cache_fds={"v8_code_cache_v2": 7})
    outer = argv[: argv.index("--")]
    assert ("7", "/cache/v8_code_cache_v2") in pairs(outer, "--file")
    assert (str(gen), "/cache/gen") in pairs(outer, "--ro-bind")
    # The tmpfs comes first, the read-only emit cache is bound into it.
    assert outer.index("/cache") < outer.index("/cache/gen")
