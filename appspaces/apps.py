from django.apps import AppConfig


class AppspacesConfig(AppConfig):
    name = "appspaces"
    verbose_name = "Apps and appspaces"

    def ready(self) -> None:
        from appspaces import notices, receivers  # noqa: F401 (notices registers its kinds)
        from appspaces.gateway.state import invalidation

        receivers.connect()
        invalidation.connect()
