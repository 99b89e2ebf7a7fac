"""deploy/install.sh, run for real into a scratch root (`--root`: the user goes into that root's
/etc/passwd, no apt, no systemctl, no migrate), and the units it writes, checked by
`systemd-analyze verify` and against the commands `serve` runs."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dropserver_site.management.commands.serve import worker_commands

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
VENV = REPO / ".venv"
PYTHON = VENV / "bin" / "python"
UNITS = (
    "dropserver.target",
    "dropserver-sandboxd.service",
    "dropserver-web.service",
    "dropserver-worker-jobs.service",
    "dropserver-worker-housekeeping.service",
)
WORKERS = ("dropserver-worker-jobs.service", "dropserver-worker-housekeeping.service")
HARDENED = UNITS[2:]
# Directives that give a unit a mount namespace of its own: the supervisor must have none, or
# the socket dirs it mounts would never reach the web (docs/sandbox.md, "Mount namespaces").
MOUNT_NAMESPACE = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "ProtectControlGroups",
    "BindPaths",
    "RootDirectory",
)


@pytest.fixture
def fresh_root(tmp_path) -> Path:
    """A root holding what a fresh Debian host has in /etc for useradd."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        shutil.copy2(Path("/etc") / name, root / "etc" / name)
    return root


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INSTALL), "--root", str(root), "--no-pip", "--venv", str(VENV), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def user_ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"{name} not in {root}/etc/passwd")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: mode, owner, mtime and content."""
    found = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        rel = str(path.relative_to(root))
        found[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, digest)
    return found


def env_file(root: Path) -> dict[str, str]:
    lines = (root / "etc/dropserver/env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def unit(root: Path, name: str) -> dict[str, list[str]]:
    """A unit file's directives (key -> every value given), comments left out."""
    found: dict[str, list[str]] = {}
    for line in (root / "etc/systemd/system" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_it_installs_the_user_directories_env_file_and_units_with_their_modes(fresh_root):
    result = install(fresh_root, "--domain", "example.org", "--email", "admin@example.org")
    assert result.returncode == 0, result.stderr
    uid, gid = user_ids(fresh_root, "dropserver")
    passwd = next(
        line
        for line in (fresh_root / "etc/passwd").read_text().splitlines()
        if line.startswith("dropserver:")
    )
    assert passwd.endswith(":/nonexistent:/usr/sbin/nologin")
    assert 0 < uid < 1000  # a system user

    def owner_mode(rel: str) -> tuple[int, int, int]:
        st = (fresh_root / rel).stat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode("var/lib/dropserver") == (uid, gid, 0o711)
    assert owner_mode("etc/dropserver") == (0, gid, 0o750)
    assert owner_mode("etc/dropserver/env") == (0, gid, 0o640)
    assert owner_mode("usr/local/bin/dropserver-manage") == (0, 0, 0o755)
    for name in UNITS:
        assert owner_mode(f"etc/systemd/system/{name}") == (0, 0, 0o644)

    env = env_file(fresh_root)
    assert env["DS_DOMAIN"] == "example.org"
    assert env["DS_TLS"] == "acme"
    assert env["DS_ACME_EMAIL"] == "admin@example.org"
    assert env["DS_DATA_DIR"] == "/var/lib/dropserver"
    assert env["DS_RUN_AS"] == "dropserver"
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", env["SECRET_KEY"])
    rendered = [fresh_root / "etc/systemd/system" / n for n in UNITS]
    rendered.append(fresh_root / "usr/local/bin/dropserver-manage")
    assert not [p for p in rendered if re.search(r"@[A-Z_]+@", p.read_text())]


def test_a_second_run_changes_nothing_and_keeps_the_secret(fresh_root):
    assert install(fresh_root, "--domain", "example.org").returncode == 0
    before = snapshot(fresh_root)
    secret = env_file(fresh_root)["SECRET_KEY"]

    again = install(fresh_root)  # the domain now comes from the env file
    assert again.returncode == 0, again.stderr
    assert "kept as it is" in again.stdout
    assert "wrote" not in again.stdout
    assert snapshot(fresh_root) == before
    assert env_file(fresh_root)["SECRET_KEY"] == secret


def test_a_changed_unit_or_env_mode_is_put_back_without_touching_the_secret(fresh_root):
    assert install(fresh_root, "--domain", "example.org").returncode == 0
    secret = env_file(fresh_root)["SECRET_KEY"]
    web = fresh_root / "etc/systemd/system/dropserver-web.service"
    web.write_text(web.read_text().replace("NoNewPrivileges=yes", ""))
    os.chmod(fresh_root / "etc/dropserver/env", 0o644)

    again = install(fresh_root)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("wrote") == 1 and "dropserver-web.service" in again.stdout
    assert "NoNewPrivileges=yes" in web.read_text()
    assert stat.S_IMODE((fresh_root / "etc/dropserver/env").stat().st_mode) == 0o640
    assert env_file(fresh_root)["SECRET_KEY"] == secret


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "--domain is required"),
        (["--domain", "example.org", "--tls", "files"], "--tls files needs --cert and --key"),
        (["--domain", "example.org", "--tls", "magic"], "--tls must be acme, internal, files"),
        (["--domain", "Bad Domain"], "is not a domain name"),
        (["--domain", "example.org", "--user", "Root;x"], "not a valid user name"),
    ],
    ids=["no-domain", "files-without-cert", "unknown-tls", "bad-domain", "bad-user"],
)
def test_bad_options_are_refused_with_a_reason_and_install_nothing(fresh_root, args, message):
    result = install(fresh_root, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (fresh_root / "etc/dropserver").exists()
    assert "dropserver:" not in (fresh_root / "etc/passwd").read_text()


@pytest.mark.parametrize(
    "args,says",
    [
        (["--domain", "other.example"], "DS_DOMAIN=example.org"),
        (["--tls", "internal"], "DS_TLS=acme"),
        (["--email", "new@example.org"], "DS_ACME_EMAIL=admin@example.org"),
    ],
    ids=["domain", "tls", "email"],
)
def test_other_settings_on_an_installed_instance_are_refused(fresh_root, args, says):
    first = install(fresh_root, "--domain", "example.org", "--email", "admin@example.org")
    assert first.returncode == 0
    before = snapshot(fresh_root)
    result = install(fresh_root, *args)
    assert result.returncode != 0
    assert f"/etc/dropserver/env already says {says};" in result.stderr
    assert snapshot(fresh_root) == before
    # The same values again are no change at all.
    same = install(fresh_root, "--domain", "example.org", "--tls", "acme")
    assert same.returncode == 0, same.stderr


def test_tls_files_and_off_write_their_settings(fresh_root, tmp_path):
    result = install(
        fresh_root,
        "--domain",
        "example.org",
        "--tls",
        "files",
        "--cert",
        "/etc/ssl/example.org.pem",
        "--key",
        "/etc/ssl/example.org.key",
    )
    assert result.returncode == 0, result.stderr
    env = env_file(fresh_root)
    assert (env["DS_TLS"], env["DS_TLS_CERT"], env["DS_TLS_KEY"]) == (
        "files",
        "/etc/ssl/example.org.pem",
        "/etc/ssl/example.org.key",
    )
    again = install(fresh_root)
    assert again.returncode == 0, again.stderr
    assert env_file(fresh_root) == env
    other = tmp_path / "other"
    shutil.copytree(fresh_root, other, symlinks=True)
    shutil.rmtree(other / "etc/dropserver")
    assert install(other, "--domain", "example.org", "--tls", "off").returncode == 0
    assert env_file(other)["DS_BEHIND_PROXY"] == "1"


def test_the_units_pass_systemd_analyze_verify(fresh_root):
    assert install(fresh_root, "--domain", "example.org").returncode == 0
    files = [str(fresh_root / "etc/systemd/system" / name) for name in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and bad values too, and only says so: nothing is allowed.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_supervisor_is_root_with_its_delegated_cgroup_and_no_mount_namespace(fresh_root):
    assert install(fresh_root, "--domain", "example.org").returncode == 0
    sup = unit(fresh_root, "dropserver-sandboxd.service")
    assert sup["User"] == ["root"]
    assert sup["Delegate"] == ["yes"]
    assert sup["KillMode"] == ["mixed"]
    assert "DS_SANDBOX_CGROUP_DELEGATED=1" in " ".join(sup["Environment"]).split()
    assert sup["EnvironmentFile"] == ["/etc/dropserver/env"]
    assert shlex.split(sup["ExecStart"][0]) == [str(PYTHON), "-m", "sandbox"]
    assert not set(sup) & set(MOUNT_NAMESPACE)


def test_web_and_edge_run_unprivileged_and_every_other_unit_hardened(fresh_root):
    assert install(fresh_root, "--domain", "example.org").returncode == 0
    for name in HARDENED:
        directives = unit(fresh_root, name)
        assert directives["Group"] == ["dropserver"], name
        assert directives["EnvironmentFile"] == ["/etc/dropserver/env"], name
        assert directives["NoNewPrivileges"] == ["yes"], name
        assert directives["ProtectSystem"] == ["strict"], name
        assert directives["ReadWritePaths"] == ["/var/lib/dropserver"], name
        assert directives["PrivateTmp"] == ["yes"], name
        assert "Delegate" not in directives, name
        executable = shlex.split(directives["ExecStart"][0])[0]
        assert executable == str(PYTHON) and PYTHON.exists(), name
    web = unit(fresh_root, "dropserver-web.service")
    assert web["User"] == ["dropserver"]
    assert web["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert web["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    argv = shlex.split(web["ExecStart"][0])
    assert argv[1:] == [str(REPO / "manage.py"), "serve_web"]
    assert Path(argv[1]).is_file()


def test_the_workers_run_as_the_platform_user_with_no_capability(fresh_root):
    """As `serve` runs them (docs/security.md, "Processes and their uids"): they unpack
    untrusted archives, so DS_RUN_AS, an empty bounding set, no ambient capability; the
    supervisor does what needs root on appspace data (tests/site/test_serve_privileges.py)."""
    assert install(fresh_root, "--domain", "example.org", "--user", "dsweb").returncode == 0
    for name in WORKERS:
        directives = unit(fresh_root, name)
        assert (directives["User"], directives["Group"]) == (["dsweb"], ["dsweb"]), name
        assert directives["CapabilityBoundingSet"] == [""], name
        assert "AmbientCapabilities" not in directives, name
        assert "UMask" not in directives, name  # the web's default: both are DS_RUN_AS now


def test_the_worker_units_run_the_commands_serve_runs(fresh_root, settings):
    """One command line per worker, in serve.py; the units must not drift from it."""
    assert install(fresh_root, "--domain", "example.org").returncode == 0
    settings.CELERY_BEAT_SCHEDULE_FILENAME = "/var/lib/dropserver/celerybeat-schedule"
    expected = {name: argv for name, argv in worker_commands()}
    for unit_name, worker in (
        ("dropserver-worker-jobs.service", "celery jobs worker"),
        ("dropserver-worker-housekeeping.service", "celery housekeeping worker"),
    ):
        exec_start = unit(fresh_root, unit_name)["ExecStart"][0].replace("%%", "%")
        assert shlex.split(exec_start) == [
            str(PYTHON) if arg == sys.executable else arg for arg in expected[worker]
        ], unit_name


@pytest.mark.parametrize(
    "name,most",
    [(name, 4.0) for name in ("dropserver-web.service", *WORKERS)],
    ids=["web", "jobs", "housekeeping"],
)
def test_systemd_rates_the_hardened_units_exposure(fresh_root, name, most):
    """`systemd-analyze security` scores 0 (locked down) to 10 (exposed): the web was 3.4, the
    workers 3.3 (5.4 while they ran as root); the supervisor, with no namespace or filter of its
    own, 9.3."""
    assert install(fresh_root, "--domain", "example.org").returncode == 0
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            fresh_root / "etc/systemd/system" / name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= most, match.group(1)


def test_a_second_run_keeps_the_user_and_data_dir_of_the_first(fresh_root):
    first = install(
        fresh_root, "--domain", "example.org", "--user", "dsweb", "--data-dir", "/srv/ds"
    )
    assert first.returncode == 0, first.stderr
    uid, gid = user_ids(fresh_root, "dsweb")
    assert (fresh_root / "srv/ds").stat().st_uid == uid
    assert unit(fresh_root, "dropserver-web.service")["ReadWritePaths"] == ["/srv/ds"]
    assert unit(fresh_root, "dropserver-web.service")["User"] == ["dsweb"]
    before = snapshot(fresh_root)
    assert install(fresh_root).returncode == 0
    assert snapshot(fresh_root) == before
    assert not (fresh_root / "var/lib/dropserver").exists()
