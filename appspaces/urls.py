from django.urls import path

from appspaces import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
]
