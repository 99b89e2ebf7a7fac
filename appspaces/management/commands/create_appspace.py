"""`manage.py create_appspace --owner EMAIL --app APP --version V --subdomain NAME
[--allow-net HOST ...] [--disk-mb N] [--memory-mb N] [--cpu-percent N] [--json]`.

Creates an appspace of one of the owner's installed apps (APP is its name or id) with the same
checks and the same job as the panel, run in this process (no Celery needed), and prints its
address. The limits must lie within the admin's bounds (DS_APPSPACE_MIN/MAX_*) and the owner's
allowance (appspaces/allowances.py); left out, they are the defaults. The sandbox supervisor
must be running: the app's migrations run in the sandbox.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from accounts.addresses import user_for_address
from appspaces.allowances import AllowanceError, check_appspace
from appspaces.lifecycle.control import AppspaceError, limit_check
from appspaces.lifecycle.creation import appspace_create, appspace_create_run
from appspaces.lifecycle.subdomains import SubdomainError, subdomain_check_available
from appspaces.management.cli import is_uuid, supervisor_problem
from appspaces.models import App, Appspace, AppVersion, Job
from appspaces.sandboxes import parse_server_entry
from packages.allowlist import AllowlistError


class Command(BaseCommand):
    help = (
        "Create an appspace of an installed app for a user and print its address. "
        "Needs the sandbox supervisor."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # `--version V` is part of the fixed command line; it replaces Django's own --version.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser) -> None:
        parser.add_argument("--owner", required=True, metavar="EMAIL", help="whose appspace")
        parser.add_argument("--app", required=True, help="the app's name or id (of the owner's)")
        parser.add_argument("--version", required=True, dest="app_version", metavar="V")
        parser.add_argument("--subdomain", required=True, metavar="NAME")
        parser.add_argument(
            "--allow-net",
            action="append",
            default=[],
            metavar="HOST",
            help="a host the app's server code may reach (repeat for more)",
        )
        for flag, unit in (("--disk-mb", "MB"), ("--memory-mb", "MB"), ("--cpu-percent", "%")):
            parser.add_argument(
                flag,
                type=int,
                default=None,
                metavar="N",
                help=f"the appspace's {flag[2:].split('-')[0]} limit in {unit} (default: the "
                "instance's default)",
            )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print one JSON object"
        )

    def handle(self, *args, owner, app, app_version, subdomain, allow_net, as_json, **kw):
        self.as_json = as_json
        limits = {name: kw.get(name) for name in ("disk_mb", "memory_mb", "cpu_percent")}
        user = user_for_address(owner)
        if user is None:
            self.fail(f"No user has the email address {owner}.")
        version = self.find_version(user, app, app_version)
        try:  # refuse what is wrong before asking the supervisor anything
            subdomain_check_available(subdomain, owner=user)
            for entry in allow_net:
                parse_server_entry(entry)
            checked = {name: limit_check(name, value) for name, value in limits.items()}
            check_appspace(user, disk_mb=checked["disk_mb"], memory_mb=checked["memory_mb"])
        except (SubdomainError, AllowlistError, AppspaceError, AllowanceError) as exc:
            self.fail(str(exc))
        self.require_supervisor()
        try:
            job = appspace_create(
                owner=user,
                app_version=version,
                subdomain=subdomain,
                server_allowlist=allow_net,
                enqueue=False,
                **limits,
            )
        except (SubdomainError, AllowlistError, AppspaceError) as exc:
            self.fail(str(exc))
        appspace_create_run(job_id=job.pk)
        job.refresh_from_db()
        if job.state != Job.State.SUCCEEDED:
            self.fail(job.message or f"The creation ended as {job.get_state_display()}.")
        appspace = Appspace.objects.get(pk=job.appspace_id)
        if self.as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": True,
                        "appspace_id": str(appspace.public_id),
                        "subdomain": appspace.subdomain,
                        "domain": appspace.domain,
                        "url": appspace.url,
                        "app_id": str(version.app.public_id),
                        "app": version.app.name,
                        "version_id": str(version.public_id),
                        "version": version.version,
                        "schema": appspace.data_schema,
                        "allow_net": sorted(
                            appspace.allowlist.filter(kind="server").values_list("value", flat=True)
                        ),
                        "disk_mb": appspace.disk_mb,
                        "memory_mb": appspace.memory_mb,
                        "cpu_percent": appspace.cpu_percent,
                        "job_id": str(job.public_id),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            self.stdout.write(appspace.url)

    def find_version(self, user, app_ref: str, version: str) -> AppVersion:
        apps = App.objects.filter(owner=user)
        found = list(apps.filter(public_id=app_ref)) if is_uuid(app_ref) else []
        if not found:
            found = list(apps.filter(name__iexact=app_ref.strip()))
        if not found:
            self.fail(f"{user.email} has no app named {app_ref}.")
        if len(found) > 1:
            ids = ", ".join(str(a.public_id) for a in found)
            self.fail(f"{user.email} has several apps named {app_ref}; give its id ({ids}).")
        app = found[0]
        match = app.versions.filter(version=version.strip()).first()
        if match is None:
            installed = ", ".join(v.version for v in app.versions.all()) or "none"
            self.fail(f"{app.name} has no version {version} (installed: {installed}).")
        return match

    def require_supervisor(self) -> None:
        if problem := supervisor_problem():
            self.fail(problem)

    def fail(self, message: str):
        if self.as_json:
            self.stdout.write(json.dumps({"ok": False, "error": message}, ensure_ascii=False))
        raise CommandError(message)
