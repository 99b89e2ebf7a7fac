from django.apps import AppConfig


class AppspacesConfig(AppConfig):
    name = "appspaces"
    verbose_name = "Apps and appspaces"

    def ready(self) -> None:
        from appspaces import subdomain_quarantine  # noqa: F401  (its deletion receiver)
