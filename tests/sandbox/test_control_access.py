"""Who may use the supervisor (sandbox/access.py), checked from the host with real processes
whose uids the kernel reports: the control socket's owner and mode, a third uid refused by the
file mode and, with the group, by SO_PEERCRED; the DS_RUN_AS uid limited to the platform's ops;
sealed socket dirs that let the DS_RUN_AS group in and nobody else.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from pathlib import Path

import pytest

from sandbox import access, protocol
from sandbox.data import usage
from tests.privileges import SYSTEM_PYTHON, control_as, run_as_test_user
from tests.sandbox.fixtures import HELLO_APP

NOBODY = 65534


@pytest.fixture(scope="module")
def run_as() -> access.RunAs:
    return run_as_test_user()


@pytest.fixture
def sup(start_supervisor, run_as):
    return start_supervisor(DS_RUN_AS=run_as.name)


def test_every_op_has_an_access_rule():
    assert set(access.ACCESS) == set(protocol.OPS)
    assert all(rule <= access.BOTH and rule for rule in access.ACCESS.values())


def test_the_control_socket_is_root_and_the_run_as_group_only(sup, run_as):
    st = os.stat(sup.data_dir / "run" / "sandboxd.sock")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, run_as.gid, 0o660)
    run = os.stat(sup.data_dir / "run")
    assert (run.st_uid, stat.S_IMODE(run.st_mode)) == (0, 0o711)


def test_without_a_run_as_user_the_socket_is_root_only(start_supervisor):
    sup = start_supervisor(DS_RUN_AS="")
    st = os.stat(sup.data_dir / "run" / "sandboxd.sock")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    answer = control_as(sup.data_dir / "run" / "sandboxd.sock", [{"id": 1, "op": "ping"}], user=0)
    assert answer["responses"][0]["ok"] is True


def test_a_third_uid_cannot_connect(sup):
    answer = control_as(
        sup.data_dir / "run" / "sandboxd.sock", [{"id": 1, "op": "ping"}], user=NOBODY
    )
    assert answer == {"connect_error": "PermissionError: Permission denied"}


def test_a_third_uid_in_the_group_is_refused_by_its_credentials(sup, run_as):
    """The file mode is one wall; a process that gets past it (here: nobody, given the group)
    still gets nothing, and is told why."""
    answer = control_as(
        sup.data_dir / "run" / "sandboxd.sock",
        [{"id": 7, "op": "list"}, {"id": 8, "op": "ping"}],
        user=NOBODY,
        extra_groups=[run_as.gid],
    )
    refused, closed = answer["responses"]
    assert refused["id"] == 7 and refused["ok"] is False
    assert refused["error"]["code"] == "forbidden"
    assert f"uid {NOBODY}" in refused["error"]["message"]
    assert "may not use the sandbox supervisor" in refused["error"]["message"]
    assert f"DS_RUN_AS ({run_as.name}, uid {run_as.uid})" in refused["error"]["message"]
    assert "closed" in closed  # hung up after saying why
    assert f"refused a control connection from uid {NOBODY}" in sup.log()
    assert isinstance(protocol.error_from_json(refused["error"]), protocol.SandboxForbidden)


def test_the_run_as_user_gets_the_platform_ops_and_nothing_else(sup, run_as, make_app):
    app = make_app({"app.ts": HELLO_APP})
    spec = app.spec().to_json()
    as_root = dict(spec, uid=0)
    outside = dict(spec, data_dir="/etc")
    answer = control_as(
        sup.data_dir / "run" / "sandboxd.sock",
        [
            {"id": 1, "op": "ping"},
            {"id": 2, "op": "exec", "argv": ["/bin/sh", "-c", "id"]},
            {"id": 3, "op": "ensure", "spec": as_root},
            {"id": 4, "op": "ensure", "spec": outside},
            {"id": 5, "op": "stop", "sandbox": "no-such-sandbox"},
        ],
        user=run_as.uid,
        group=run_as.gid,
    )
    ping, exec_, root_spec, outside_spec, stop = answer["responses"]
    assert ping["ok"] is True and ping["result"]["pid"] == sup.pid
    assert (
        exec_["error"]["code"] == "bad_request" and "unknown op 'exec'" in exec_["error"]["message"]
    )
    assert root_spec["error"]["code"] == "bad_request"
    assert outside_spec["error"]["code"] == "bad_request"
    assert stop["error"]["code"] == "not_found"  # allowed, about a sandbox that does not run
    assert sup.process.poll() is None


def test_a_sealed_socket_dir_lets_the_run_as_group_in_and_nobody_else(sup, run_as, make_app):
    spec = make_app({"app.ts": HELLO_APP}).spec()
    answer = control_as(
        sup.data_dir / "run" / "sandboxd.sock",
        [{"id": 1, "op": "ensure", "spec": spec.to_json()}],
        user=run_as.uid,
        group=run_as.gid,
    )
    socket_path = answer["responses"][0]["result"]["socket"]
    folder = os.stat(os.path.dirname(socket_path))
    sock = os.stat(socket_path)
    assert (folder.st_uid, folder.st_gid, stat.S_IMODE(folder.st_mode)) == (0, run_as.gid, 0o750)
    assert (sock.st_uid, sock.st_gid, stat.S_IMODE(sock.st_mode)) == (spec.uid, run_as.gid, 0o660)
    assert _http_get(socket_path, user=run_as.uid, group=run_as.gid).endswith("hello")
    refused = _http_get(socket_path, user=NOBODY, group=NOBODY)
    assert refused == "PermissionError"
    # The appspace's own uid cannot even look into its sealed dir any more.
    assert _http_get(socket_path, user=spec.uid, group=spec.uid) == "PermissionError"


def _http_get(path: str, *, user: int, group: int) -> str:
    """GET / over the sandbox socket as that uid (route 0), as the gateway sends it."""
    client = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(30)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__); sys.exit(0)\n"
        "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Dropserver-Route: 0\\r\\n"
        "Connection: close\\r\\n\\r\\n')\n"
        "data = b''\n"
        "while chunk := s.recv(65536):\n"
        "    data += chunk\n"
        "print(data.decode(errors='replace').strip())\n"
    )
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", client, path],
        user=user,
        group=group,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
    )
    return result.stdout.strip()


def test_the_run_as_user_has_an_appspace_s_files_removed_by_id_only(sup, run_as, make_app):
    """`data_remove`: the appspace's data (its uid's), meta, log and socket folders go, by id;
    never while it runs, never a path, never through a link."""
    spec = make_app({"app.ts": HELLO_APP}).spec()
    socket_path = sup.client.ensure(spec)
    data = os.path.dirname(spec.data_dir)
    (Path(spec.data_dir) / "kept.txt").write_text("mine")
    os.chown(Path(spec.data_dir) / "kept.txt", spec.uid, spec.uid)
    victim = sup.data_dir / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    control = sup.data_dir / "run" / "sandboxd.sock"
    as_user = {"user": run_as.uid, "group": run_as.gid}
    running = control_as(control, [{"id": 1, "op": "data_remove", "appspace": spec.id}], **as_user)
    assert running["responses"][0]["error"]["code"] == "busy"
    assert os.path.exists(socket_path)
    sup.client.stop(spec.id)
    bad = [
        {"id": 2, "op": "data_remove", "appspace": "../victim"},
        {"id": 3, "op": "data_remove", "appspace": str(victim)},
    ]
    for answer in control_as(control, bad, **as_user)["responses"]:
        assert answer["error"]["code"] == "bad_request"
    done = control_as(control, [{"id": 4, "op": "data_remove", "appspace": spec.id}], **as_user)
    assert set(done["responses"][0]["result"]["removed"]) >= {"appspace", "log"}
    assert not os.path.exists(data)
    assert not (sup.data_dir / "logs" / spec.id).exists()
    assert (victim / "precious").read_text() == "x"
    # An appspace folder that is a link is removed as a link: its target stays.
    os.symlink(victim, sup.data_dir / "appspaces" / "linked")
    control_as(control, [{"id": 5, "op": "data_remove", "appspace": "linked"}], **as_user)
    assert not os.path.lexists(sup.data_dir / "appspaces" / "linked")
    assert (victim / "precious").read_text() == "x"


def test_the_run_as_user_has_an_appspace_s_disk_measured_by_the_supervisor(sup, run_as, make_app):
    """`data_usage`: the data is the appspace uid's (0700), unreadable to the web servers and
    workers; the supervisor walks it as root, by id, and gets what a root walk gets."""
    spec = make_app({"app.ts": HELLO_APP}).spec()
    sup.client.ensure(spec)
    sup.client.stop(spec.id)
    data = Path(spec.data_dir)
    hidden = data / "hidden"
    hidden.mkdir()
    (hidden / "blob").write_bytes(b"x" * 300_000)
    for path in (hidden, hidden / "blob"):
        os.chown(path, spec.uid, spec.uid)
    hidden.chmod(0o000)  # what an app can do to its own folder
    listing = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import os, sys; os.listdir(sys.argv[1])", str(data)],
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "PermissionError" in listing.stderr
    answer = control_as(
        sup.data_dir / "run" / "sandboxd.sock",
        [
            {"id": 1, "op": "data_usage", "appspace": spec.id},
            {"id": 2, "op": "data_usage", "appspace": "../../etc"},
        ],
        user=run_as.uid,
        group=run_as.gid,
    )
    measured, refused = answer["responses"]
    assert measured["result"] == dataclasses.asdict(usage.measure(data))
    assert measured["result"]["apparent_bytes"] >= 300_000
    assert refused["error"]["code"] == "bad_request"


def test_the_run_as_user_has_a_restored_tree_handed_over_and_swapped_in(sup, run_as, make_app):
    """`data_hand_over`, `data_swap`, `data_remove` of a part: a restore run by the platform
    user (not root), with the appspace's folder the platform's as creation leaves it."""
    spec = make_app({"app.ts": HELLO_APP}).spec()
    sup.client.ensure(spec)
    sup.client.stop(spec.id)
    folder = Path(spec.data_dir).parent
    os.chown(folder, run_as.uid, run_as.gid)
    (Path(spec.data_dir) / "old.txt").write_text("old")
    stage = folder / ".restore-0123abcd"
    (stage / "data" / "sub").mkdir(parents=True)
    (stage / "data" / "sub" / "new.txt").write_text("new")
    for path in (stage, stage / "data", stage / "data" / "sub", stage / "data" / "sub" / "new.txt"):
        os.chown(path, run_as.uid, run_as.gid)  # as the worker extracted it
    os.symlink("/etc/passwd", stage / "data" / "link")
    control = sup.data_dir / "run" / "sandboxd.sock"
    as_user = {"user": run_as.uid, "group": run_as.gid}
    refused = control_as(
        control,
        [
            {"id": 1, "op": "data_hand_over", "appspace": spec.id, "part": stage.name, "uid": 0},
            {
                "id": 2,
                "op": "data_hand_over",
                "appspace": spec.id,
                "part": "../..",
                "uid": spec.uid,
            },
            {
                "id": 3,
                "op": "data_hand_over",
                "appspace": spec.id,
                "part": ".previous-x",
                "uid": spec.uid,
            },
            {"id": 4, "op": "data_swap", "appspace": spec.id, "part": ".restore-missing"},
        ],
        **as_user,
    )
    assert [r["error"]["code"] for r in refused["responses"]] == ["bad_request"] * 4
    done = control_as(
        control,
        [
            {
                "id": 5,
                "op": "data_hand_over",
                "appspace": spec.id,
                "part": stage.name,
                "uid": spec.uid,
            },
            {"id": 6, "op": "data_swap", "appspace": spec.id, "part": stage.name},
        ],
        **as_user,
    )
    handed, swapped = done["responses"]
    assert handed["result"] == {"files": 1, "folders": 2}, handed
    assert swapped["result"] == {"swapped": True}, swapped
    live = Path(spec.data_dir)
    new = os.stat(live / "sub" / "new.txt")
    assert (new.st_uid, stat.S_IMODE(new.st_mode)) == (spec.uid, 0o600)
    assert (os.stat(live / "sub").st_uid, stat.S_IMODE(os.stat(live / "sub").st_mode)) == (
        spec.uid,
        0o700,
    )
    assert os.lstat(live / "link").st_uid == 0  # the link was left alone, never followed
    assert os.stat("/etc/passwd").st_uid == 0
    assert (stage / "data" / "old.txt").read_text() == "old"  # the replaced data, aside
    removed = control_as(
        control,
        [{"id": 7, "op": "data_remove", "appspace": spec.id, "part": stage.name}],
        **as_user,
    )
    assert removed["responses"][0]["result"]["removed"] == [stage.name]
    assert not stage.exists() and (live / "sub" / "new.txt").read_text() == "new"


def test_the_run_as_user_reads_an_appspace_s_data_through_a_read_only_view(sup, run_as, make_app):
    """`data_view`: the appspace's uid reads as the DS_RUN_AS user on an idmapped, read-only
    mount; nobody else gets in, nothing can be written, and closing it takes it down."""
    spec = make_app({"app.ts": HELLO_APP}).spec()
    sup.client.ensure(spec)
    secret = Path(spec.data_dir) / "notes" / "secret.txt"
    secret.parent.mkdir(mode=0o700)
    secret.write_text("the owner's words")
    for path in (secret.parent, secret):
        os.chown(path, spec.uid, spec.uid)
    secret.chmod(0o600)
    control = sup.data_dir / "run" / "sandboxd.sock"
    as_user = {"user": run_as.uid, "group": run_as.gid}
    answer = control_as(
        control,
        [
            {"id": 1, "op": "data_view", "appspace": spec.id, "uid": 0},
            {"id": 2, "op": "data_view", "appspace": spec.id, "uid": spec.uid},
        ],
        **as_user,
    )
    refused, opened = answer["responses"]
    assert refused["error"]["code"] == "bad_request"
    view = Path(opened["result"]["path"])
    read = (
        "import sys\n"
        "try:\n"
        "    print(open(sys.argv[1] + '/notes/secret.txt').read())\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
        "try:\n"
        "    open(sys.argv[1] + '/planted', 'w')\n"
        "except OSError as exc:\n"
        "    print(exc.strerror)\n"
    )

    def run(user: int, group: int) -> list[str]:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", read, str(view)],
            user=user, group=group, extra_groups=[], capture_output=True, text=True,
            check=True, cwd="/",
        )  # fmt: skip
        return result.stdout.splitlines()

    assert run(run_as.uid, run_as.gid) == ["the owner's words", "Read-only file system"]
    assert run(NOBODY, NOBODY)[0] == "PermissionError"
    assert os.stat(secret).st_uid == spec.uid  # the data itself is unchanged
    closed = control_as(
        control, [{"id": 3, "op": "data_view_close", "appspace": spec.id}], **as_user
    )
    assert closed["responses"][0]["result"] == {"closed": True}
    assert not view.exists()
