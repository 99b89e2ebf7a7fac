"""The restic wrapper: one repository (local path, sftp:, s3:, rest:, ...), driven through the
`restic` command (Debian package) with JSON output. Nothing here touches the database.

API (all methods raise `ResticError` with a `kind` and a scrubbed `message`):
- `Repository.from_settings()` / `Repository(location, password_file, env=None, cache_dir=None)`
- `configured()` -> bool: is an off-site repository set at all
- `ensure()`: open the repository, or initialise it when nothing is there yet
- `backup(paths, tags, host=None, progress=None)` -> snapshot id; `progress(fraction, status)`
- `snapshots(tags=None)` -> [Snapshot], oldest first; tags match all given ("k=v" strings)
- `dump(snapshot, path, out)`: write one file of a snapshot to `out` (an open binary file)
- `restore(snapshot, target, include=None)`: restore (part of) a snapshot under `target`
- `forget(snapshot_ids, prune=True)` / `forget_policy(tags, keep_last, keep_daily, ...)`
- `check(read_data_subset=None)` -> CheckResult(ok, output)
- `unlock()`: remove stale locks (left by a killed restic)

Credentials: the password is read by restic from the password file; backend credentials
(AWS_*, B2_*, AZURE_*, GOOGLE_*, OS_*, RESTIC_* ...) come from this process's environment and
are passed through to restic only. `scrub()` removes every such secret (and any URL userinfo)
from text before it reaches a log or a Job message.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from backups.offsite.results import CheckResult, ResticError, Snapshot, classify
from backups.offsite.sftp import sftp_command

__all__ = ["CheckResult", "Repository", "ResticError", "Snapshot", "classify", "REDACTED"]

RESTIC = "restic"
# Environment variables restic (or the ssh it runs for sftp:) reads; passed through as they are.
PASSTHROUGH_PREFIXES = (
    "AWS_",
    "RESTIC_",
    "B2_",
    "AZURE_",
    "GOOGLE_",
    "OS_",
    "ST_",
    "RCLONE_",
)
PASSTHROUGH_NAMES = ("PATH", "HOME", "TMPDIR", "SSH_AUTH_SOCK", "LANG", "LC_ALL")
# Values of these passed-through variables are not secret and are not scrubbed.
NOT_SECRET = {
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "SSH_AUTH_SOCK",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "RESTIC_REPOSITORY",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_CACHE_DIR",
    "RESTIC_PROGRESS_FPS",
    "RESTIC_COMPRESSION",
    "RESTIC_PACK_SIZE",
}
REDACTED = "[redacted]"
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@\s:]*):(?P<pw>[^/@\s]*)@")


class Repository:
    """One restic repository and how to open it."""

    def __init__(
        self,
        location: str,
        password_file: str | os.PathLike,
        *,
        env: dict[str, str] | None = None,
        cache_dir: str | os.PathLike | None = None,
        timeout: float | None = None,
        ssh_key: str | os.PathLike = "",
        ssh_known_hosts: str | os.PathLike = "",
    ):
        self.location = location
        self.ssh_key = str(ssh_key or "")
        self.ssh_known_hosts = str(ssh_known_hosts or "")
        self.password_file = str(password_file) if password_file else ""
        self._env = dict(os.environ if env is None else env)
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.timeout = timeout

    @classmethod
    def from_settings(cls) -> Repository:
        from django.conf import settings

        cache = Path(settings.DS_DATA_DIR) / "cache" / "restic"
        return cls(
            settings.DS_BACKUP_REPOSITORY,
            settings.DS_BACKUP_REPOSITORY_PASSWORD_FILE,
            cache_dir=cache,
            ssh_key=settings.DS_BACKUP_SSH_KEY_FILE,
            ssh_known_hosts=settings.DS_BACKUP_SSH_KNOWN_HOSTS,
        )

    def is_local(self) -> bool:
        return self.location.startswith("/") or self.location.startswith("local:")

    def configured(self) -> bool:
        return bool(self.location and self.password_file)

    # --- secrets ------------------------------------------------------------------------------

    def secrets(self) -> list[str]:
        found = []
        try:
            password = Path(self.password_file).read_text().strip() if self.password_file else ""
        except OSError:
            password = ""
        if password:
            found.append(password)
        for name, value in self.env().items():
            if name not in NOT_SECRET and value and len(value) >= 4:
                found.append(value)
        for match in _USERINFO.finditer(self.location):
            if match.group("pw"):
                found.append(match.group("pw"))
        return sorted(set(found), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """`text` without the repository password, backend credentials or URL passwords."""
        for secret in self.secrets():
            text = text.replace(secret, REDACTED)
        return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{REDACTED}@", text)

    # --- running restic -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        out = {
            k: v
            for k, v in self._env.items()
            if k in PASSTHROUGH_NAMES or k.startswith(PASSTHROUGH_PREFIXES)
        }
        out.pop("RESTIC_PASSWORD_COMMAND", None)  # the password file is the one source
        out.pop("RESTIC_PASSWORD", None)
        out["RESTIC_REPOSITORY"] = self.location
        out["RESTIC_PASSWORD_FILE"] = self.password_file
        out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        out["TZ"] = "UTC"  # --time and the dates restic prints are UTC
        if self.cache_dir:
            out["RESTIC_CACHE_DIR"] = self.cache_dir
        return out

    def _args(self, args: Iterable[str]) -> list[str]:
        base = [RESTIC, "--no-cache"] if not self.cache_dir else [RESTIC]
        # sftp: never prompt for a password or a host key on a terminal that is not there.
        if self.location.startswith("sftp:"):
            base += ["-o", "sftp.command=" + self._sftp_command()]
        return base + list(args)

    def _sftp_command(self) -> str:
        return sftp_command(self.location, self.ssh_key, self.ssh_known_hosts)

    def _check_configured(self) -> None:
        if not self.configured():
            raise ResticError(
                ResticError.NOT_CONFIGURED,
                "No off-site repository is configured (DS_BACKUP_REPOSITORY and "
                "DS_BACKUP_REPOSITORY_PASSWORD_FILE).",
            )
        if not Path(self.password_file).is_file():
            raise ResticError(
                ResticError.NOT_CONFIGURED, "The repository password file cannot be read."
            )

    def run(
        self, *args: str, stdout: IO[bytes] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run `restic ARGS`; on failure raise a ResticError with scrubbed output. A lock left
        by a restic that died (killed mid-upload) is removed (`restic unlock` only removes
        stale locks) and the command run once more."""
        proc = self._run_once(args, stdout, check=False)
        if proc.returncode != 0 and args[0] != "unlock":
            error = self._error(proc.stderr)
            if error.kind == ResticError.LOCKED:
                self._run_once(("unlock",), None, check=False)
                if stdout is not None:
                    stdout.seek(0)
                    stdout.truncate()
                proc = self._run_once(args, stdout, check=False)
        if check and proc.returncode != 0:
            raise self._error(proc.stderr)
        return proc

    def _run_once(
        self, args: Iterable[str], stdout: IO[bytes] | None, *, check: bool
    ) -> subprocess.CompletedProcess:
        self._check_configured()
        try:
            proc = subprocess.run(
                self._args(args),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ResticError(ResticError.UNREACHABLE, "restic did not answer in time.") from exc
        if check and proc.returncode != 0:
            raise self._error(proc.stderr)
        return proc

    def _error(self, stderr: bytes | str) -> ResticError:
        text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        text = self.scrub(text.strip())
        lines = [ln for ln in text.splitlines() if ln.strip()]
        kind = classify(text)
        if kind == ResticError.UNREACHABLE and "unable to start the sftp session" in text:
            # restic may exit before it has passed on all of ssh's error output: ask ssh.
            why = self._ssh_diagnosis()
            if "host key verification failed" in why.lower():
                return ResticError(
                    ResticError.HOST_KEY,
                    "The sftp server's host key is not one this host trusts (the known_hosts "
                    "file of DS_BACKUP_SSH_KNOWN_HOSTS): Host key verification failed.\n" + why,
                )
        return ResticError(kind, "\n".join(lines[-8:])[-2000:] or "restic failed")

    def _ssh_diagnosis(self) -> str:
        """ssh's own error output for the sftp command restic runs (scrubbed, last lines)."""
        try:
            proc = subprocess.run(
                shlex.split(self._sftp_command()),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired, ResticError):
            return ""
        lines = [ln for ln in self.scrub(proc.stderr.decode(errors="replace")).splitlines()]
        return "\n".join(ln for ln in lines[-4:] if ln.strip())[-1000:]

    # --- operations ---------------------------------------------------------------------------

    def ensure(self) -> bool:
        """Open the repository, creating it when there is none; True if it was created."""
        proc = self.run("cat", "config", check=False)
        if proc.returncode == 0:
            return False
        error = self._error(proc.stderr)
        if error.kind != ResticError.NO_REPOSITORY:
            raise error
        if self.is_local() and not Path(self.location.removeprefix("local:")).parent.is_dir():
            # A disk that is not mounted: never create a repository on the root filesystem.
            raise ResticError(
                ResticError.UNREACHABLE,
                f"The repository folder's parent {Path(self.location).parent} does not exist "
                "(is its disk mounted?).",
            )
        self.run("init")
        return True

    def backup(
        self,
        paths: Iterable[str | os.PathLike],
        tags: Iterable[str],
        *,
        host: str | None = None,
        time: datetime | None = None,
        progress: Callable[[float, dict], None] | None = None,
    ) -> str:
        """Back `paths` up with `tags` (and the snapshot dated `time`, e.g. when the archive was
        made, for retention by date); returns the new snapshot's id."""
        tags = list(tags)
        try:
            return self._backup(paths, tags, host=host, time=time, progress=progress)
        except ResticError as exc:
            if exc.kind != ResticError.LOCKED:
                raise
            self.unlock()  # an exclusive lock left by a killed prune or check
            return self._backup(paths, tags, host=host, time=time, progress=progress)

    def _backup(self, paths, tags, *, host, time, progress) -> str:
        self._check_configured()
        args = ["backup", "--json"]
        for tag in tags:
            args += ["--tag", tag]
        if host:
            args += ["--host", host]
        if time is not None:
            local = time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            args += ["--time", local]
        args += [str(p) for p in paths]
        env = self.env()
        env.setdefault("RESTIC_PROGRESS_FPS", "1")
        # stderr goes to a file: a pipe nobody reads while stdout is followed could fill up.
        with tempfile.TemporaryFile() as errfile:
            proc = subprocess.Popen(
                self._args(args),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errfile,
            )
            self.last_pid = proc.pid
            try:
                return self._follow(proc, errfile, progress)
            finally:
                if proc.poll() is None:  # the caller stopped us (a cancelled job): stop restic
                    proc.kill()
                    proc.wait()

    def _follow(self, proc: subprocess.Popen, errfile: IO[bytes], progress) -> str:
        snapshot = ""
        errors: list[str] = []
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            kind = msg.get("message_type")
            if kind == "status" and progress is not None:
                progress(float(msg.get("percent_done") or 0.0), msg)
            elif kind == "summary":
                snapshot = msg.get("snapshot_id", "")
                self.last_summary = msg  # data_added, files_new, ... (bench, reports)
            elif kind == "error":
                errors.append(str(msg.get("error", "")))
        code = proc.wait()
        errfile.seek(0)
        stderr = errfile.read(1 << 20)
        if code != 0 or not snapshot:
            text = stderr.decode(errors="replace") + "\n" + "\n".join(errors)
            raise self._error(text if text.strip() else f"restic exited with {code}")
        if progress is not None:
            progress(1.0, {})
        return snapshot

    def snapshots(self, tags: Iterable[str] | None = None) -> list[Snapshot]:
        args = ["snapshots", "--json"]
        tags = list(tags or [])
        if tags:
            args += ["--tag", ",".join(tags)]  # a comma joins: all of them
        proc = self.run(*args)
        data = json.loads(proc.stdout or b"[]") or []
        return [
            Snapshot(
                id=s["id"],
                short_id=s.get("short_id", s["id"][:8]),
                time=s.get("time", ""),
                tags=s.get("tags") or [],
                paths=s.get("paths") or [],
                hostname=s.get("hostname", ""),
            )
            for s in data
        ]

    def dump(self, snapshot: str, path: str, out: IO[bytes]) -> None:
        """Write the file `path` of `snapshot` to `out` (restic verifies every blob it reads)."""
        self.run("dump", snapshot, path, stdout=out)

    def restore(self, snapshot: str, target: str | os.PathLike, include: str | None = None):
        args = ["restore", snapshot, "--target", str(target)]
        if include:
            args += ["--include", include]
        self.run(*args)

    def forget(self, snapshot_ids: Iterable[str], *, prune: bool = True) -> None:
        ids = list(snapshot_ids)
        if ids:
            self.run("forget", *(["--prune"] if prune else []), *ids)

    def forget_policy(
        self,
        tags: Iterable[str],
        *,
        keep_last: int = 1,
        keep_daily: int = 0,
        keep_weekly: int = 0,
        keep_within: str = "",
        prune: bool = True,
        group_by: str = "",
    ) -> None:
        """`restic forget` by policy over the snapshots that have all `tags`, in groups of
        `group_by` (restic's: "host", "paths", "tags", comma-joined; "" is one group)."""
        # By default one group: the snapshots with all `tags` (grouping by tags would split
        # them, as each carries its own backup=<id> tag).
        args = ["forget", "--group-by", group_by, "--tag", ",".join(tags)]
        if keep_last:
            args += ["--keep-last", str(keep_last)]
        if keep_daily:
            args += ["--keep-daily", str(keep_daily)]
        if keep_weekly:
            args += ["--keep-weekly", str(keep_weekly)]
        if keep_within:
            args += ["--keep-within", keep_within]
        if prune:
            args.append("--prune")
        self.run(*args)

    def check(self, read_data_subset: str | None = None) -> CheckResult:
        """`restic check` (with `--read-data-subset`, e.g. "1/10" or "5%", re-reads packs)."""
        args = ["check"]
        if read_data_subset:
            args += ["--read-data-subset", read_data_subset]
        proc = self.run(*args, check=False)
        out = (proc.stdout or b"").decode(errors="replace") + (proc.stderr or b"").decode(
            errors="replace"
        )
        out = self.scrub(out.strip())[-4000:]
        if proc.returncode == 0:
            return CheckResult(True, out)
        kind = classify(out)
        if kind == ResticError.FAILED:
            kind = ResticError.CORRUPTED if "error" in out.lower() else kind
        return CheckResult(False, out, kind)

    def unlock(self) -> None:
        self.run("unlock")
