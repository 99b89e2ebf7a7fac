"""Where sandbox cgroups go when the supervisor owns a delegated cgroup subtree.

Under systemd the supervisor's unit (`deploy/systemd/dropserver-sandboxd.service`) has
`Delegate=yes` and sets DS_SANDBOX_CGROUP_DELEGATED=1: the unit's own cgroup is the
supervisor's to manage, so every sandbox cgroup goes below it (`<own>/dropserver/<instance>`)
instead of at the top of the hierarchy. systemd then accounts the sandboxes to the unit, shows
them in `systemctl status`, and stops whatever is left in them with the unit; nothing of ours
sits in the cgroup root that systemd considers its own.

Without the setting (`make run`, `serve`, the tests) the groups stay at the top of each
hierarchy as before: a process's own cgroup may belong to someone else there (a login
session, a container runtime) and is no place for ours.

On cgroup v1 systemd delegates only the controllers it manages (memory, cpu, cpuacct, pids,
blkio, devices); a hierarchy where the supervisor sits at "/" (freezer) keeps the instance
group at its top. On v2 the unified hierarchy is the only one, and the supervisor moves into a
`supervisor` leaf of its cgroup (`cgroups._leave_delegated_top`).
"""

from __future__ import annotations

from pathlib import Path

from sandbox.walls.cgroups import V1_CONTROLLERS, CgroupError

V2_LEAF = "supervisor"


def own_cgroups(text: str | None = None) -> dict[str, str]:
    """`/proc/self/cgroup` as hierarchy -> path: "" for the v2 unified hierarchy, a v1
    controller by its name (co-mounted controllers each get the shared path)."""
    if text is None:
        text = Path("/proc/self/cgroup").read_text()
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            own[""] = path
            continue
        for controller in controllers.split(","):
            if controller in V1_CONTROLLERS:
                own[controller] = path
    return own


def bases(text: str | None = None) -> dict[str, str]:
    """Hierarchy -> the cgroup sandbox groups go under, for a supervisor told it is delegated
    (`cgroups.probe(bases=...)`). CgroupError when it sits at the top of the hierarchy that
    limits memory: it was started outside its unit, and would fill the root after all."""
    own = own_cgroups(text)
    if own.get("", "/").endswith("/" + V2_LEAF):  # v2: already moved out of the unit's group
        own[""] = own[""].rsplit("/", 1)[0] or "/"
    key = "memory" if "memory" in own else ""
    if own.get(key, "/") == "/":
        where = f"the {key} hierarchy" if key else "the cgroup v2 hierarchy"
        raise CgroupError(
            "DS_SANDBOX_CGROUP_DELEGATED=1, but the supervisor is at the top of "
            f"{where}, not in a cgroup delegated to it: start it from its systemd unit "
            "(deploy/systemd/dropserver-sandboxd.service, Delegate=yes), or unset the setting"
        )
    return own
