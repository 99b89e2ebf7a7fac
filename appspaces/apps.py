from django.apps import AppConfig


class AppspacesConfig(AppConfig):
    name = "appspaces"
    verbose_name = "Apps and appspaces"

    def ready(self) -> None:
        from appspaces import receivers

        receivers.connect()
