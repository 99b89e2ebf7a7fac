"""Account URLs of our own; allauth's follow under the same /accounts/ prefix."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.account_overview, name="account_overview"),
    path("invitation/<str:token>/", views.invitation_open, name="invitation_open"),
]

# Mounted at the root by dropserver_site/urls.py: the link `serve` prints is /setup/<key>/.
setup_urlpatterns = [
    path("setup/<str:key>/", views.setup, name="setup"),
]
