"""Mounted at the root by dropserver_site/urls.py."""

from django.urls import path

from accounts.notices import views

urlpatterns = [
    path("accounts/notices/", views.notice_settings, name="notice_settings"),
    path("notices/<uuid:notice_id>/dismiss", views.notice_dismiss, name="notice_dismiss"),
]
