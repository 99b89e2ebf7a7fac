"""`manage.py install_examples [--owner EMAIL] [--force]`: the example apps, for a newcomer.

Builds examples/* into packages and queues their installs for the oldest active admin (or
--owner); on a fresh instance without an admin they are queued when the first admin account
is created. The installs run in the Celery worker of `manage.py serve`. See
appspaces/installs/examples.py.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.addresses import user_for_address
from appspaces.installs.examples import (
    ExampleError,
    examples_build,
    examples_pending_save,
    examples_queue,
)


class Command(BaseCommand):
    help = "Build the example apps and queue their installs for the first admin."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--owner", metavar="EMAIL", help="install for this user instead")
        parser.add_argument(
            "--force", action="store_true", help="queue them even if this user had them before"
        )

    def handle(self, *args, owner: str | None, force: bool, **options) -> None:
        try:
            packages = examples_build()
        except ExampleError as exc:
            raise CommandError(str(exc)) from None
        names = ", ".join(f"{p.name} {p.version}" for p in packages)
        users = get_user_model().objects.filter(is_active=True)
        if owner:
            user = user_for_address(owner)
            if user is None or not user.is_active:
                raise CommandError(f"No active user has the email address {owner}.")
        else:
            user = users.filter(is_superuser=True).order_by("date_joined", "pk").first()
        if user is None:
            examples_pending_save(packages)
            self.stdout.write(
                f"Example apps ready ({names}); they will be installed for the first admin "
                "as soon as that account is created with the setup link `serve` prints."
            )
            return
        jobs = examples_queue(owner=user, packages=packages, force=force)
        if not jobs:
            self.stdout.write(
                f"The example apps were already installed for {user.email} "
                "(--force installs what is missing again)."
            )
            return
        self.stdout.write(
            f"Queued the example apps ({names}) for {user.email}; the worker of "
            "`manage.py serve` installs them."
        )
