"""The emit cache is warmed at install, at the paths every appspace sandbox sees, and stays ro."""

from __future__ import annotations

import hashlib

import pytest

from tests.sandbox.fixtures import HELLO_APP

pytestmark = pytest.mark.sandbox


def digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_warming_emits_the_app_and_harness_at_sandbox_paths(supervisor, make_app, http_request):
    app = make_app(
        {"app.ts": 'import "./lib.ts";\n' + HELLO_APP, "lib.ts": "export const x: number = 1;\n"}
    )
    result = supervisor.client.run_once(app.job_spec(), "warm")
    assert result.ok, result
    gen = app.cache_dir / "gen" / "file"
    assert (gen / "app" / "app.ts.js").is_file()
    assert (gen / "app" / "lib.ts.js").is_file()
    assert (gen / "dropserver" / "main.ts.js").is_file()
    # V8's code cache is filled too, folded into one file per database.
    assert (app.cache_dir / "v8_code_cache_v2").stat().st_size > 4096
    assert not list(app.cache_dir.glob("*-wal"))
    # Handed back to root and readable by every appspace uid.
    for path in [app.cache_dir, *app.cache_dir.rglob("*")]:
        st = path.lstat()
        assert st.st_uid == 0, path
        assert path.is_symlink() or st.st_mode & 0o004, path

    before = digest(app.cache_dir)
    status, _, _ = http_request(supervisor.client.ensure(app.spec()))
    assert status == 200
    assert digest(app.cache_dir) == before  # read-only for appspaces


def test_app_code_cannot_write_the_cache_while_it_is_warmed(supervisor, make_app):
    """Warming runs app-init with /cache writable (for V8's code cache); the app still may not."""
    app = make_app(
        {
            "app.ts": """
let error = "none";
try { await Deno.writeTextFile("/cache/gen/file/app/app.ts.js", "poisoned"); }
catch (e) { error = e.name; }
console.error("write attempt: " + error);
"""
            + HELLO_APP
        }
    )
    result = supervisor.client.run_once(app.job_spec(), "warm")
    assert result.ok, result
    assert "write attempt: NotCapable" in result.stderr_tail
    assert result.result["routes"][0]["path"] == "/"  # warming also reports what app-init does
    emitted = app.cache_dir / "gen" / "file" / "app" / "app.ts.js"
    assert b"denoCacheMetadata" in emitted.read_bytes()  # still Deno's own emit
    files = [p for p in app.cache_dir.rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.read_bytes() == b"poisoned"]


def test_root_copies_a_warmed_cache_without_following_what_the_job_planted(tmp_path):
    """What a warm job leaves in its tmpfs is its uid's: links to root-only files, a fifo, a
    link where a SQLite -wal file goes. Root's copy (`mounts.copy_out`) holds regular files
    and folders only and never opens what a link points at."""
    import os

    from sandbox.walls import launcher, mounts, prepare

    secret = tmp_path / "root-only"
    secret.write_text("secret")
    secret.chmod(0o600)
    stage = tmp_path / "stage"
    (stage / "gen" / "file").mkdir(parents=True)
    (stage / "gen" / "file" / "app.ts.js").write_text("emitted")
    os.symlink(secret, stage / "gen" / "stolen.js")
    os.symlink(tmp_path, stage / "gen" / "up")
    os.symlink(secret, stage / f"{launcher.CACHE_DATABASES[0]}-wal")
    os.mkfifo(stage / "fifo")
    target = tmp_path / "cache"
    mounts.copy_out(stage, target, max_bytes=1 << 20)
    prepare.checkpoint_cache_databases(str(target))

    found = {str(p.relative_to(target)) for p in target.rglob("*")}
    assert found == {"gen", "gen/file", "gen/file/app.ts.js"}
    assert not [p for p in target.rglob("*") if p.is_symlink()]
    assert (target / "gen" / "file" / "app.ts.js").stat().st_mode & 0o777 == 0o644
    assert secret.read_text() == "secret"

    (stage / "big").write_bytes(b"x" * (2 << 20))
    with pytest.raises(mounts.CopyRefused):
        mounts.copy_out(stage, tmp_path / "cache2", max_bytes=1 << 20)
