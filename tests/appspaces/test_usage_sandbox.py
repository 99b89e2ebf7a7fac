"""Usage collection and the disk quota against a real supervisor and a real Deno app: CPU burned
by a route shows up in the day's figures (bounded by the CPU quota), restarts neither lose the
new run nor count the old one twice, two collectors at once count once, and an app that writes
past its disk quota is made read-only (writes fail, checked from the host; reads work) until
its data is freed."""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from appspaces import tasks
from appspaces.models import App, Appspace, AppspaceUsageDay, AppVersion
from appspaces.sandboxes import appspace_spec
from appspaces.usage import collection, counters, quota
from sandbox.client import SandboxClient
from tests.sandbox.fixtures import host_lacks, lay_out_app, send_request

pytestmark = [pytest.mark.sandbox]

APP = """
import process from "node:process";
import { createApp } from "@dropserver/app";

function fileIn(ctx: any): string {
  const name = new URL(ctx.request.url).searchParams.get("name") ?? "file.bin";
  return `${ctx.dataPath}/${name}`;
}

async function write(ctx: any, append: boolean): Promise<Response> {
  const kb = Number(new URL(ctx.request.url).searchParams.get("kb") ?? "1");
  const chunk = new Uint8Array(64 * 1024);
  try {
    const options = { write: true, create: true, append, truncate: !append };
    const file = await Deno.open(fileIn(ctx), options);
    try {
      for (let left = kb * 1024; left > 0; left -= chunk.length) {
        crypto.getRandomValues(chunk);  // incompressible, never sparse
        await file.write(chunk.subarray(0, Math.min(left, chunk.length)));
      }
      await file.sync();
    } finally {
      file.close();
    }
    return new Response("written");
  } catch (e) {
    return new Response(`refused: ${(e as Error).name}`, { status: 507 });
  }
}

createApp({ routes: [
  { method: "GET", path: "/", auth: "public", handler: () => new Response("hello") },
  { method: "GET", path: "/burn", auth: "public", handler: (ctx: any) => {
      // Burns `ms` of this process's CPU time, not of wall time: on a busy host a wall-time
      // loop gets less CPU than it asked for, and the figures below would depend on the load.
      const ms = Number(new URL(ctx.request.url).searchParams.get("ms") ?? "100");
      const start = process.cpuUsage();
      let n = 0;
      for (;;) {
        n++;
        if ((n & 0xffff) !== 0) continue;
        const used = process.cpuUsage(start);
        if (used.user + used.system >= ms * 1000) break;
      }
      return new Response(String(n));
  } },
  { method: "POST", path: "/write", auth: "public", handler: (ctx: any) => write(ctx, false) },
  { method: "POST", path: "/append", auth: "public", handler: (ctx: any) => write(ctx, true) },
  { method: "GET", path: "/size", auth: "public", handler: async (ctx: any) => {
      const data = await Deno.readFile(fileIn(ctx));
      return new Response(String(data.length));
  } },
] });
"""
HELLO, BURN, WRITE, APPEND, SIZE = range(5)


@pytest.fixture(autouse=True)
def _settings(settings):
    # Appspace uids are base + pk: other test runs on this host use small pks too.
    settings.DS_SANDBOX_UID_BASE = 500_000_000 + secrets.randbelow(10**6) * 1000
    settings.DS_GATEWAY_CACHE_TTL = 0.1  # the re-check after a read-only switch waits this
    settings.DS_USAGE_DISK_RUNNING_SECONDS = 3600  # collections here measure nothing


@pytest.fixture
def supervisor(start_supervisor):
    """The measured quota (the fallback), whatever the environment says: these tests write past
    the quota, which a data image would refuse at once (see the image test at the end)."""
    return start_supervisor(DS_SANDBOX_DISK_IMAGES="0")


def appspace_for(owner, *, disk_mb: int = 100, cpu_percent: int = 50) -> Appspace:
    laid_out = lay_out_app({"app.ts": APP})
    app = App.objects.create(owner=owner, name="Usage probe")
    App.objects.filter(pk=app.pk).update(public_id=laid_out.app_id)
    app.refresh_from_db()
    version = AppVersion.objects.create(
        app=app, version="1.0.0", version_key="1.0.0", entrypoint="app.ts"
    )
    return Appspace.objects.create(
        owner=owner,
        app=app,
        app_version=version,
        subdomain=f"probe-{secrets.token_hex(4)}",
        status=Appspace.Status.ACTIVE,
        memory_mb=256,
        cpu_percent=cpu_percent,
        disk_mb=disk_mb,
    )


def call(client: SandboxClient, appspace: Appspace, route: int, path: str, method: str = "GET"):
    appspace.refresh_from_db()
    sock = client.ensure(appspace_spec(appspace))
    return send_request(sock, method, path, headers={"X-Dropserver-Route": str(route)}, timeout=30)


def direct(client: SandboxClient, appspace: Appspace, route: int, path: str, method: str = "GET"):
    """A request to whatever runs now, without the `ensure` that would apply a new spec."""
    sock = client.usage(str(appspace.public_id))["socket"]
    return send_request(sock, method, path, headers={"X-Dropserver-Route": str(route)}, timeout=30)


def today_row(appspace: Appspace) -> AppspaceUsageDay:
    return AppspaceUsageDay.objects.get(appspace=appspace, day=counters.today())


def cgroup_cpu_s(client: SandboxClient, appspace: Appspace) -> float:
    return client.usage(str(appspace.public_id))["cpu_usage_ns"] / 1e9


def pid_of(client: SandboxClient, appspace: Appspace) -> int | None:
    return client.usage(str(appspace.public_id)).get("pid")


# --- CPU, running time, memory ---------------------------------------------------------------


@pytest.mark.django_db
def test_it_counts_the_cpu_a_route_burns_bounded_by_the_quota(supervisor, alice):
    client = supervisor.client
    appspace = appspace_for(alice, cpu_percent=50)
    assert call(client, appspace, HELLO, "/")[0] == 200
    assert collection.usage_collect_all(client) == 1
    before = today_row(appspace)
    assert before.memory_peak_bytes > 10 * 1024 * 1024  # Deno itself takes ~30 MB

    started = time.monotonic()
    status, _, body = call(client, appspace, BURN, "/burn?ms=1000")
    wall = time.monotonic() - started
    assert status == 200 and int(body) > 0
    collection.usage_collect_all(client)
    burned = today_row(appspace).cpu_seconds - before.cpu_seconds

    # 1 s of CPU under a 50% quota: counted whole (the cgroup sees at least what the process
    # used), and never more than the quota allows over the wall time it took (plus what
    # Deno's own threads add).
    assert burned >= 0.99, burned
    assert burned <= wall * 0.5 + 0.3, (burned, wall)
    # What the day says is exactly what the cgroup counted (one run so far).
    assert today_row(appspace).cpu_seconds == pytest.approx(
        cgroup_cpu_s(client, appspace), abs=0.05
    )
    assert today_row(appspace).running_seconds >= wall


@pytest.mark.django_db
def test_it_counts_across_sandbox_restarts_never_negative_or_twice(supervisor, alice):
    client = supervisor.client
    appspace = appspace_for(alice, cpu_percent=100)
    call(client, appspace, BURN, "/burn?ms=500")
    collection.usage_collect_all(client)
    first = today_row(appspace)
    first_pid = pid_of(client, appspace)
    assert first.cpu_seconds >= 0.3

    # Nothing happened since: a second collection adds (almost) nothing.
    collection.usage_collect_all(client)
    assert today_row(appspace).cpu_seconds - first.cpu_seconds < 0.05
    first = today_row(appspace)  # with the idle sandbox's last few microseconds

    # A restart starts the counters again from zero in a new cgroup.
    counted_of_old_run = Appspace.objects.get(pk=appspace.pk).usage_counters["cpu_ns"]
    client.restart(appspace_spec(appspace))
    assert pid_of(client, appspace) != first_pid
    new_run_cpu = cgroup_cpu_s(client, appspace)
    assert new_run_cpu < first.cpu_seconds  # a naive `now - before` would be negative here
    (entry,) = [e for e in client.list() if e["id"] == str(appspace.public_id)]
    old_run_final = entry["last_run"]
    assert old_run_final["pid"] == first_pid
    collection.usage_collect_all(client)
    after = today_row(appspace)
    kept = Appspace.objects.get(pk=appspace.pk).usage_counters
    # The old run's last moments (its final counters) and the new run whole are added; the
    # old run is not counted again.
    old_tail = (old_run_final["cpu_usage_ns"] - counted_of_old_run) / 1e9
    assert 0 <= old_tail < 0.2
    assert after.cpu_seconds == pytest.approx(first.cpu_seconds + old_tail + kept["cpu_ns"] / 1e9)
    assert after.cpu_seconds >= first.cpu_seconds
    assert kept["cpu_ns"] / 1e9 == pytest.approx(new_run_cpu, abs=0.05)
    assert after.running_seconds >= first.running_seconds
    assert kept["prev"]["pid"] == first_pid

    # And again after the restart: no double counting of the new run either.
    collection.usage_collect_all(client)
    assert today_row(appspace).cpu_seconds - after.cpu_seconds < 0.05

    # A stopped sandbox: nothing to sample, nothing added, nothing lost.
    client.stop(str(appspace.public_id))
    assert collection.usage_collect_all(client) == 0


@pytest.mark.django_db
def test_the_last_moments_of_a_run_that_stopped_between_collections_are_counted(supervisor, alice):
    client = supervisor.client
    appspace = appspace_for(alice, cpu_percent=100)
    call(client, appspace, BURN, "/burn?ms=200")
    collection.usage_collect_all(client)
    before = today_row(appspace)

    # Work after the last collection, then the sandbox stops (idle timeout, a restart...).
    call(client, appspace, BURN, "/burn?ms=700")
    burned_since = cgroup_cpu_s(client, appspace) - before.cpu_seconds
    assert burned_since >= 0.5
    client.stop(str(appspace.public_id))

    # Nothing is running, yet the collection adds what the run did in its last minute...
    assert collection.usage_collect_all(client) == 0
    after = today_row(appspace)
    assert after.cpu_seconds - before.cpu_seconds == pytest.approx(burned_since, abs=0.05)
    assert after.running_seconds > before.running_seconds
    # ...once: the supervisor lists that final reading until the sandbox runs again.
    collection.usage_collect_all(client)
    assert today_row(appspace).cpu_seconds == after.cpu_seconds


@pytest.mark.django_db(transaction=True)
def test_it_counts_once_when_two_collections_run_at_once(supervisor, alice, monkeypatch):
    appspace = appspace_for(alice, cpu_percent=100)
    call(supervisor.client, appspace, BURN, "/burn?ms=400")
    both_sampled = threading.Barrier(2, timeout=20)

    class RacingClient(SandboxClient):
        def usage(self, sandbox_id: str) -> dict:
            answer = super().usage(sandbox_id)
            both_sampled.wait()  # both collectors hold a sample before either writes
            return answer

    errors: list[BaseException] = []

    def collect() -> None:
        try:
            collection.usage_collect_all(RacingClient(supervisor.client.path))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=collect) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors

    row = today_row(appspace)
    kept = Appspace.objects.get(pk=appspace.pk).usage_counters
    assert row.cpu_seconds == pytest.approx(kept["cpu_ns"] / 1e9)  # counted once, not twice
    assert row.cpu_seconds <= cgroup_cpu_s(supervisor.client, appspace) + 0.01
    assert row.cpu_seconds >= 0.3
    assert row.running_seconds == pytest.approx(kept["uptime_s"])


@pytest.mark.django_db
def test_it_skips_collection_when_the_supervisor_is_not_running(alice, caplog):
    appspace = appspace_for(alice)
    assert collection.usage_collect_all() == 0
    assert "usage collection skipped" in caplog.text
    assert not AppspaceUsageDay.objects.filter(appspace=appspace).exists()


# --- Disk quota --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_makes_data_read_only_over_the_quota_and_writable_once_freed(supervisor, alice):
    client = supervisor.client
    appspace = appspace_for(alice, disk_mb=1)
    big, small = appspace.data_path / "big.bin", appspace.data_path / "small.bin"
    assert call(client, appspace, WRITE, "/write?name=big.bin&kb=2048", "POST")[:1] == (200,)
    assert big.stat().st_size == 2048 * 1024  # seen from the host
    running_pid = pid_of(client, appspace)

    assert tasks.disk_measure.run() == 1
    appspace.refresh_from_db()
    assert appspace.disk_bytes >= 2 * 1024 * 1024
    assert appspace.data_readonly
    assert today_row(appspace).disk_bytes_max == appspace.disk_bytes
    # It took effect now: the running sandbox was restarted with its data read-only.
    assert pid_of(client, appspace) not in (None, running_pid)

    status, _, body = direct(client, appspace, APPEND, "/append?name=small.bin&kb=64", "POST")
    assert (status, body) == (507, b"refused: NotCapable")
    assert not small.exists()  # from the host: nothing was written
    status, _, body = call(client, appspace, APPEND, "/append?name=big.bin&kb=64", "POST")
    assert status == 507, body
    assert big.stat().st_size == 2048 * 1024  # the file did not grow
    # Reads still work, and what was written before stays.
    assert call(client, appspace, SIZE, "/size?name=big.bin")[::2] == (200, b"2097152")

    # The owner frees space (as root from the host here), then measures again.
    big.unlink()
    readonly_pid = pid_of(client, appspace)
    quota.appspace_measure_now(appspace=appspace)
    appspace.refresh_from_db()
    assert not appspace.data_readonly
    assert appspace.disk_bytes < 1024 * 1024
    assert pid_of(client, appspace) not in (None, readonly_pid)
    assert call(client, appspace, APPEND, "/append?name=small.bin&kb=64", "POST")[0] == 200
    assert small.stat().st_size == 64 * 1024


@pytest.mark.django_db
def test_it_keeps_data_read_only_until_use_falls_under_the_resume_threshold(supervisor, alice):
    client = supervisor.client
    appspace = appspace_for(alice, disk_mb=1)
    # 1100 KiB: over the 1 MiB quota; 1000 KiB: under it but above 95% of it (972.8 KiB).
    assert call(client, appspace, WRITE, "/write?name=a.bin&kb=1100", "POST")[0] == 200
    tasks.disk_measure.run(appspace.pk)
    appspace.refresh_from_db()
    assert appspace.data_readonly

    client.stop(str(appspace.public_id))
    (appspace.data_path / "a.bin").unlink()
    (appspace.data_path / "b.bin").write_bytes(secrets.token_bytes(1000 * 1024))
    os.chown(appspace.data_path / "b.bin", appspace.sandbox_uid, appspace.sandbox_uid)
    tasks.disk_measure.run(appspace.pk)
    appspace.refresh_from_db()
    assert appspace.data_readonly, appspace.disk_bytes  # under the quota, not under 95% of it
    # Stopped: nothing restarted it, and its next start is read-only.
    assert client.usage(str(appspace.public_id))["state"] == "stopped"
    assert appspace_spec(appspace).data_readonly
    status, _, _ = call(client, appspace, APPEND, "/append?name=b.bin&kb=1", "POST")
    assert status == 507
    assert (appspace.data_path / "b.bin").stat().st_size == 1000 * 1024

    (appspace.data_path / "b.bin").write_bytes(secrets.token_bytes(900 * 1024))
    tasks.disk_measure.run(appspace.pk)
    appspace.refresh_from_db()
    assert not appspace.data_readonly
    assert call(client, appspace, APPEND, "/append?name=b.bin&kb=1", "POST")[0] == 200
    assert (appspace.data_path / "b.bin").stat().st_size == 901 * 1024


@pytest.mark.django_db
def test_a_gateway_holding_the_stale_spec_cannot_make_the_sandbox_writable_again(supervisor, alice):
    client = supervisor.client
    appspace = appspace_for(alice, disk_mb=1)
    big = appspace.data_path / "big.bin"
    assert call(client, appspace, WRITE, "/write?name=big.bin&kb=1100", "POST")[0] == 200
    stale_spec = appspace_spec(appspace)  # what a gateway cached before the switch
    assert not stale_spec.data_readonly

    tasks.disk_measure.run(appspace.pk)
    appspace.refresh_from_db()
    assert appspace.data_readonly
    pid = pid_of(client, appspace)
    size = big.stat().st_size

    # A request through a gateway whose cache still holds the writable spec: the supervisor
    # keeps the newer generation, so the app stays read-only and is not even restarted.
    sock = client.ensure(stale_spec)
    headers = {"X-Dropserver-Route": str(APPEND)}
    assert send_request(sock, "POST", "/append?name=big.bin&kb=4", headers=headers)[0] == 507
    assert pid_of(client, appspace) == pid
    assert big.stat().st_size == size


@pytest.mark.django_db
def test_it_applies_read_only_to_a_sandbox_frozen_by_a_backup_once_thawed(supervisor, alice):
    client = supervisor.client
    appspace = appspace_for(alice, disk_mb=1)
    big = appspace.data_path / "big.bin"
    assert call(client, appspace, WRITE, "/write?name=big.bin&kb=1100", "POST")[0] == 200
    frozen_pid = pid_of(client, appspace)
    client.freeze(str(appspace.public_id))  # a backup is archiving its data

    tasks.disk_measure.run(appspace.pk)
    appspace.refresh_from_db()
    assert appspace.data_readonly and appspace.usage_counters.get("respec")
    assert client.usage(str(appspace.public_id))["state"] == "frozen"  # the backup goes on
    assert pid_of(client, appspace) == frozen_pid

    client.thaw(str(appspace.public_id))
    collection.usage_collect_all(client)
    assert pid_of(client, appspace) not in (None, frozen_pid)
    assert not Appspace.objects.get(pk=appspace.pk).usage_counters.get("respec")
    assert direct(client, appspace, APPEND, "/append?name=big.bin&kb=4", "POST")[0] == 507
    assert big.stat().st_size == 1100 * 1024


# --- the kernel-enforced quota (sandbox.walls.diskimage) ---------------------------------------


@pytest.mark.django_db
def test_an_image_stops_writes_at_the_quota_and_a_raised_quota_makes_room(
    start_supervisor, alice, django_capture_on_commit_callbacks, settings
):
    from appspaces.lifecycle.control import appspace_limits_set
    from sandbox.walls import diskimage

    if not diskimage.available()[0]:
        host_lacks(diskimage.available()[1])
    settings.DS_SANDBOX_DISK_IMAGES = True  # the panel and workers: same switch, same env
    client = start_supervisor(DS_SANDBOX_DISK_IMAGES="1").client
    appspace = appspace_for(alice, disk_mb=20)
    data = appspace.data_path
    assert call(client, appspace, WRITE, "/write?name=keep.bin&kb=64", "POST")[0] == 200
    kept = (data / "keep.bin").read_bytes()
    # As fast as it can, far past the quota: refused inside the app, which answers.
    status, _, body = call(client, appspace, WRITE, "/write?name=big.bin&kb=40960", "POST")
    assert status == 507, body
    image = diskimage.image_path(data)
    assert image.stat().st_blocks * 512 <= 20 * 1024 * 1024  # host side, never past the quota
    assert call(client, appspace, SIZE, "/size?name=keep.bin")[::2] == (200, b"65536")
    assert not appspace.data_readonly  # nothing to switch: the kernel held the line
    # The owner's path to a bigger quota: the limits form calls this.
    with django_capture_on_commit_callbacks(execute=True):
        appspace_limits_set(appspace=appspace, memory_mb=256, cpu_percent=50, disk_mb=60)
    assert call(client, appspace, WRITE, "/write?name=more.bin&kb=30720", "POST")[0] == 200
    assert (data / "keep.bin").read_bytes() == kept  # nothing lost on the way
    assert (data / "more.bin").stat().st_size == 30 * 1024 * 1024
    assert image.stat().st_size == 60 * 1024 * 1024
    quota.appspace_measure_now(appspace=appspace)
    appspace.refresh_from_db()
    assert appspace.disk_bytes >= 30 * 1024 * 1024
    client.stop(str(appspace.public_id))
    # Stopped, its data is in the unmounted image: the measure holds it mounted for the walk.
    tasks.disk_measure.run(appspace.pk)
    appspace.refresh_from_db()
    assert appspace.disk_bytes >= 30 * 1024 * 1024
    real = os.path.realpath(data)
    mounted = Path("/proc/mounts").read_text().splitlines()
    assert real not in [line.split()[1] for line in mounted]
