"""Shared fixtures: a private DS_DATA_DIR per test and the personas every feature is tested with.

Personas (as in healthchecks): `admin` runs the instance, `alice` owns things, `bob` is her
friend, `charlie` is an outsider who should have no access to Alice's stuff.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.test import override_settings

from tests.db_sessions import fail_if_left_open, is_test_database

PASSWORD = "correct horse battery staple 42"


@pytest.fixture(scope="session")
def data_root():
    # Not under pytest's basetemp: that is 0700, and sandbox uids must traverse DS_DATA_DIR.
    root = Path(tempfile.mkdtemp(prefix="ds-tests-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, checked at the end for sessions something left open on
    it (tests/db_sessions.py): with one open, it cannot be dropped, and pytest-django would only
    warn about it. (With no test asking for the database, pytest-django creates none.)"""
    from django.db import connection

    name = connection.settings_dict["NAME"]
    checked = connection.vendor == "postgresql" and is_test_database(connection)
    yield
    if not checked or connection.settings_dict["NAME"] != name:
        return
    with django_db_blocker.unblock():
        fail_if_left_open(connection)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2 costs ~0.5 s a hash on these machines (its point in production); no test
    # depends on the hasher, and the personas alone would cost seconds per test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def ds_data_dir(settings, data_root) -> Path:
    """Every test gets its own DS_DATA_DIR, laid out with the modes of a real one."""
    path = Path(tempfile.mkdtemp(prefix="data-", dir=data_root))
    path.chmod(0o711)
    settings.DS_DATA_DIR = path
    return path


def make_user(email: str, *, staff: bool = False, display_name: str = ""):
    from accounts.models import User

    user = User.objects.create_user(
        email, PASSWORD, is_staff=staff, is_superuser=staff, display_name=display_name
    )
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@pytest.fixture
def admin_user(db):
    return make_user("admin@example.com", staff=True, display_name="Admin")


@pytest.fixture
def alice(db):
    return make_user("alice@example.com", display_name="Alice")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com", display_name="Bob")


@pytest.fixture
def charlie(db):
    return make_user("charlie@example.com", display_name="Charlie")


@pytest.fixture
def panel_host() -> str:
    return settings.DS_PANEL_HOST


@pytest.fixture(autouse=True, scope="session")
def _cache_keys_per_worker():
    """xdist workers share this machine's Redis: each keeps its cache keys (allauth's
    rate-limit counters among them, which tests reset) apart from the other's, here and in
    the servers it starts (DS_CACHE_KEY_PREFIX, read by settings.py)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        yield
        return
    prefix = f"test-{worker}"
    os.environ["DS_CACHE_KEY_PREFIX"] = prefix
    with override_settings(
        CACHES={"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}}
    ):
        yield
