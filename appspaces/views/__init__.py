"""Panel views of apps, appspaces and jobs: one module per concern (form, service, render)."""
