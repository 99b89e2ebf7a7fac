"""`manage.py setup_link`: print a fresh one-time link to create the first admin."""

from django.core.management.base import BaseCommand, CommandError

from accounts.services import setup_link_issue


class Command(BaseCommand):
    help = (
        "Print a one-time link that creates the first admin account. Earlier unused links "
        "stop working. Refuses once the instance has an active admin."
    )

    def handle(self, *args, **options) -> None:
        url = setup_link_issue()
        if url is None:
            raise CommandError(
                "This instance already has an active admin: log in, or use "
                "`manage.py createsuperuser` to add another."
            )
        self.stdout.write(url)
