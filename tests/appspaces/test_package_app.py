"""`manage.py package_app DIR -o FILE`: validates an app folder and builds its package."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from packages.extraction import ExtractionLimits, read_manifest_from_archive, safe_extract
from packages.manifest import load_manifest

MANIFEST = {"name": "Guestbook", "version": "1.0.0", "license": "MIT"}


def make_app(root: Path, manifest: dict | None = None) -> Path:
    (root / "public" / "css").mkdir(parents=True)
    (root / "app.ts").write_text('import { createApp } from "@dropserver/app";\n')
    (root / "public" / "index.html").write_text("<h1>Hi</h1>")
    (root / "public" / "css" / "site.css").write_text("body{}")
    (root / "dropapp.json").write_text(json.dumps(manifest or MANIFEST))
    return root


def package(source: Path, output: Path) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("package_app", str(source), "-o", str(output), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refuse(source: Path, output: Path) -> str:
    with pytest.raises(CommandError) as info:
        package(source, output)
    assert not output.exists()
    assert [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")] == []
    return str(info.value)


def test_it_builds_a_package_the_platform_installs(tmp_path):
    source = make_app(tmp_path / "app")
    output = tmp_path / "out" / "guestbook.tar.gz"
    stdout, stderr = package(source, output)
    assert "Packaged Guestbook 1.0.0: 4 files" in stdout and "sha256 " in stdout
    assert stderr == ""
    limits = ExtractionLimits.for_app_packages()
    assert json.loads(read_manifest_from_archive(output, limits=limits)) == MANIFEST
    safe_extract(output, tmp_path / "installed", limits=limits)
    assert load_manifest(tmp_path / "installed").ok
    assert (tmp_path / "installed" / "public" / "css" / "site.css").read_text() == "body{}"


def test_it_builds_deterministic_archives(tmp_path):
    source = make_app(tmp_path / "app")
    package(source, tmp_path / "first.tar.gz")
    os.utime(source / "app.ts", (1_000_000, 1_000_000))
    (source / "public" / "index.html").chmod(0o600)
    package(source, tmp_path / "second.tar.gz")
    assert (tmp_path / "first.tar.gz").read_bytes() == (tmp_path / "second.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "first.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "dropapp.json"
    assert names[1:] == sorted(names[1:])
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert {m.mode for m in members if m.isfile()} == {0o644}
    assert {m.mode for m in members if m.isdir()} == {0o755}


def test_it_prints_warnings_and_skips_version_control(tmp_path):
    source = make_app(tmp_path / "app", {"version": "1.0.0", "name": "A very long name " * 3})
    (source / ".git").mkdir()
    (source / ".git" / "config").write_text("[core]")
    output = tmp_path / "app.tar.gz"
    _, stderr = package(source, output)
    assert "warning: name: is longer than 30 characters" in stderr
    assert "warning: license: is missing" in stderr
    assert "skipped: .git" in stderr
    with tarfile.open(output) as tar:
        assert not any(".git" in name for name in tar.getnames())


def test_it_leaves_out_its_own_output(tmp_path):
    source = make_app(tmp_path / "app")
    package(source, source / "dist.tar.gz")
    package(source, source / "dist.tar.gz")  # again, with the first result in the folder
    with tarfile.open(source / "dist.tar.gz") as tar:
        assert "dist.tar.gz" not in tar.getnames()


def test_it_refuses_manifest_errors_with_every_reason(tmp_path):
    source = make_app(tmp_path / "app", {"version": "one", "code": "ftp://example.com"})
    message = refuse(source, tmp_path / "app.tar.gz")
    assert message.startswith("The app cannot be packaged:")
    assert "- version: 'one' is not a semantic version" in message
    assert "- code: 'ftp://example.com' must be an http" in message


def test_it_refuses_a_folder_without_an_entrypoint(tmp_path):
    source = make_app(tmp_path / "app")
    (source / "app.ts").unlink()
    assert "entrypoint: not given, and neither app.ts nor app.js" in refuse(
        source, tmp_path / "a.tar.gz"
    )


def test_it_refuses_symlinks(tmp_path):
    source = make_app(tmp_path / "app")
    (source / "public" / "passwd").symlink_to("/etc/passwd")
    (source / "linked").symlink_to(source / "public")
    message = refuse(source, tmp_path / "a.tar.gz")
    assert "'linked' is a symbolic link" in message
    assert "'public/passwd' is a symbolic link" in message


def test_it_refuses_fifos(tmp_path):
    source = make_app(tmp_path / "app")
    os.mkfifo(source / "pipe")
    assert "'pipe' is a FIFO" in refuse(source, tmp_path / "a.tar.gz")


def test_it_refuses_names_that_would_not_install(tmp_path):
    source = make_app(tmp_path / "app")
    (source / "README").write_text("1")
    (source / "readme").write_text("2")
    os.close(os.open(os.fsencode(source) + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    (source / "a\\b.txt").write_text("x")
    message = refuse(source, tmp_path / "a.tar.gz")
    assert "'README' and 'readme' differ only in upper/lower case" in message
    assert "is not valid UTF-8" in message
    assert "contains a backslash" in message


def test_it_refuses_a_folder_over_the_limits(tmp_path, settings):
    settings.DS_APP_MAX_FILES = 5
    source = make_app(tmp_path / "app")
    for i in range(5):
        (source / f"extra{i}.txt").write_text("x")
    assert "more than 5 files and folders" in refuse(source, tmp_path / "a.tar.gz")


def test_it_refuses_a_missing_folder(tmp_path):
    with pytest.raises(CommandError, match="is not a folder"):
        package(tmp_path / "nope", tmp_path / "a.tar.gz")
