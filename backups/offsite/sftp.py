"""The ssh command restic runs for an `sftp:` repository (its `sftp.command` option): never
prompting (BatchMode), host keys always checked strictly (an unknown or changed key fails the
run, nothing is added to any known_hosts), and with DS_BACKUP_SSH_KNOWN_HOSTS only that file
consulted, with DS_BACKUP_SSH_KEY_FILE only that key offered."""

from __future__ import annotations

from backups.offsite.results import ResticError


def sftp_command(location: str, key: str = "", known_hosts: str = "") -> str:
    """`ssh ... host -s sftp` for the repository string `location` (sftp:user@host:/path or
    sftp://user@host:port//path)."""
    rest = location[len("sftp:") :]
    hostpart = rest[2:].split("/", 1)[0] if rest.startswith("//") else rest.split(":", 1)[0]
    user = ""
    if "@" in hostpart:
        user, hostpart = hostpart.rsplit("@", 1)
    port = ""
    if hostpart.startswith("["):
        host, _, port = hostpart[1:].partition("]")
        port = port.lstrip(":")
    elif hostpart.count(":") == 1:
        host, port = hostpart.split(":")
    else:
        host = hostpart
    cmd = "ssh -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=yes"
    if known_hosts:  # the admin's file pinning the server's key, and only it
        cmd += f" -o UserKnownHostsFile={_plain(known_hosts)} -o GlobalKnownHostsFile=/dev/null"
    if key:
        cmd += f" -i {_plain(key)} -o IdentitiesOnly=yes"
    if port:
        cmd += f" -p {int(port)}"
    if user:
        cmd += f" -l {user}"
    return f"{cmd} {host} -s sftp"


def _plain(path: str) -> str:
    """A path restic can put in its sftp command line (split on spaces): refused otherwise."""
    if any(c.isspace() or c in "\"'\\" for c in path):
        raise ResticError(
            ResticError.NOT_CONFIGURED,
            "The ssh key and known_hosts paths (DS_BACKUP_SSH_KEY_FILE, "
            "DS_BACKUP_SSH_KNOWN_HOSTS) may not contain spaces or quotes.",
        )
    return path
