"""The walls around one sandbox, as the supervisor builds them (it runs as root; nothing here
is imported by the web or the workers except the host checks).

launcher           bubblewrap's argv: the filesystem view, then Deno's flags
mounts             every mount a sandbox sees and why; the host-side tmpfs mounts
prepare            the process bubblewrap becomes: uid, rlimits, no new privileges
spawn              starting it: fork/exec with the cgroup joined before exec
seccomp            compiles the allowlist into the BPF filter
seccomp_allowlist  the one reviewed list of syscalls (and arguments) Deno may make
seccomp_trace      `python -m sandbox.walls.seccomp_trace`: derive and re-check that list
cgroups            CPU, memory, pids and IO caps (cgroup v1 and v2 backends), the instance ceiling
diskimage          the kernel-enforced disk quota: a loop-mounted ext4 image per appspace
preflight          whether this host can run sandboxes safely (bubblewrap, cgroups, uids)
relay              the one door out to this instance's appspaces: a per-sandbox socket that
                   carries plain requests to the gateway, as an anonymous visitor's
"""
