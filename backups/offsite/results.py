"""What the restic wrapper (backups/offsite/restic.py) returns and raises: `ResticError` with a
one-word `kind`, `classify()` of restic's error text into those kinds, `Snapshot` and
`CheckResult`. Import them from `backups.offsite.restic`, which re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, field


class ResticError(Exception):
    """A restic run that failed; `kind` says why in a word, `message` is safe to show."""

    UNREACHABLE = "unreachable"
    WRONG_PASSWORD = "wrong-password"
    NO_REPOSITORY = "no-repository"
    NO_SPACE = "no-space"
    CORRUPTED = "corrupted"
    LOCKED = "locked"
    NOT_CONFIGURED = "not-configured"
    NOT_FOUND = "not-found"
    HOST_KEY = "host-key"  # sftp: the server's host key is unknown or not the pinned one
    FAILED = "failed"

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class Snapshot:
    id: str
    short_id: str
    time: str
    tags: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    hostname: str = ""

    def tag(self, key: str) -> str | None:
        """The value of a "key=value" tag, if the snapshot has one."""
        for tag in self.tags:
            if tag.startswith(key + "="):
                return tag[len(key) + 1 :]
        return None


@dataclass
class CheckResult:
    ok: bool
    output: str  # scrubbed
    kind: str = ""  # a ResticError kind when not ok


def classify(stderr: str) -> str:
    """A ResticError kind for restic's error output."""
    text = stderr.lower()
    if "wrong password" in text or "no key found" in text:
        return ResticError.WRONG_PASSWORD
    if "host key verification failed" in text:
        return ResticError.HOST_KEY
    if "no space left" in text or "disk quota exceeded" in text:
        return ResticError.NO_SPACE
    if "repository is already locked" in text or "unable to create lock" in text:
        return ResticError.LOCKED
    if (
        "ciphertext verification failed" in text
        or "hash mismatch" in text
        or "repository contains errors" in text
        or "checksum mismatch" in text
        or "invalid data returned" in text
        or "decrypting blob" in text
        or "unexpected end of" in text
    ):
        return ResticError.CORRUPTED
    if "is there a repository at the following location" in text:
        return ResticError.NO_REPOSITORY
    if (
        "unable to open repository" in text
        or "unable to start the sftp session" in text
        or "connection refused" in text
        or "no such host" in text
        or "i/o timeout" in text
        or "network is unreachable" in text
        or "unable to open config file" in text
    ):
        return ResticError.UNREACHABLE
    if "no matching id found" in text or "not found" in text and "snapshot" in text:
        return ResticError.NOT_FOUND
    return ResticError.FAILED
