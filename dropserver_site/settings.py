"""Dropserver's one settings module: everything comes from the environment (django-environ).

Embedded defaults need no server (SQLite, kombu's filesystem broker, the in-memory channel
layer, console email); real engines are switched on by environment variables. A public
domain is "production": it must have https, an explicit secret key and DEBUG off, or the
process refuses to start.

One module on purpose (its names are a fixed contract): one block per part of the platform,
in the order of docs/architecture.md, and one CELERY_BEAT_SCHEDULE at the end.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from dropserver_site.hosts import is_dev_domain, normalize_host
from dropserver_site.observe.logs import logging_config
from packages.hostnames import HostnameError

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Platform -------------------------------------------------------------------------------

DS_DATA_DIR = Path(env.str("DS_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
try:
    DS_DOMAIN = normalize_host(env.str("DS_DOMAIN", default="localhost"))
    DS_PANEL_HOST = normalize_host(env.str("DS_PANEL_HOST", default=f"dropid.{DS_DOMAIN}"))
except HostnameError as exc:
    raise ImproperlyConfigured(f"DS_DOMAIN / DS_PANEL_HOST: {exc}") from None
DS_PRODUCTION = not is_dev_domain(DS_DOMAIN)

# --- TLS edge ---------------------------------------------------------------------------------
# Owned by dropserver_site/edge/ (see docs/operations.md, "TLS"): with DS_TLS on, `serve` runs
# Caddy in front of Daphne. Caddy listens on DS_PORT (plain HTTP: redirects and ACME HTTP-01)
# and DS_HTTPS_PORT; Daphne then listens on loopback only, on DS_WEB_PORT. An operator with
# a TLS proxy of their own sets DS_BEHIND_PROXY=1, which keeps DS_TLS off unless asked for.
DS_TLS_MODES = ("off", "acme", "internal", "files")
_behind_proxy = env.bool("DS_BEHIND_PROXY", default=False)
DS_TLS = env.str("DS_TLS", default="off" if not DS_PRODUCTION or _behind_proxy else "acme")
if DS_TLS not in DS_TLS_MODES:
    raise ImproperlyConfigured(f"DS_TLS must be one of {', '.join(DS_TLS_MODES)}; not {DS_TLS!r}.")
DS_TLS_ON = DS_TLS != "off"
DS_PORT = env.int("DS_PORT", default=80 if DS_TLS_ON else 8000)
DS_HTTPS_PORT = env.int("DS_HTTPS_PORT", default=443)
DS_WEB_PORT = env.int("DS_WEB_PORT", default=8000) if DS_TLS_ON else DS_PORT
DS_BIND = env.str("DS_BIND", default="0.0.0.0" if DS_TLS_ON else "127.0.0.1")
DS_TLS_CERT = env.str("DS_TLS_CERT", default="")
DS_TLS_KEY = env.str("DS_TLS_KEY", default="")
DS_ACME_EMAIL = env.str("DS_ACME_EMAIL", default="")
DS_ACME_DIRECTORY_LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
DS_ACME_DIRECTORY = env.str("DS_ACME_DIRECTORY", default=DS_ACME_DIRECTORY_LETSENCRYPT)
DS_ACME_CA_ROOT = env.str("DS_ACME_CA_ROOT", default="")
DS_CADDY = env.str("DS_CADDY", default="/usr/bin/caddy")
if DS_TLS_ON and len({DS_PORT, DS_HTTPS_PORT, DS_WEB_PORT}) != 3:
    raise ImproperlyConfigured(
        f"With DS_TLS={DS_TLS}, DS_PORT ({DS_PORT}, plain HTTP), DS_HTTPS_PORT "
        f"({DS_HTTPS_PORT}) and DS_WEB_PORT ({DS_WEB_PORT}, Daphne on loopback) must differ."
    )
if DS_TLS == "files":
    for _name, _path in (("DS_TLS_CERT", DS_TLS_CERT), ("DS_TLS_KEY", DS_TLS_KEY)):
        if not _path:
            raise ImproperlyConfigured(f"DS_TLS=files needs {_name} (a PEM file).")
        if not Path(_path).is_file():
            raise ImproperlyConfigured(f"{_name} ({_path}) is not a readable file.")
elif DS_TLS_CERT or DS_TLS_KEY:
    raise ImproperlyConfigured("DS_TLS_CERT and DS_TLS_KEY are only used with DS_TLS=files.")
if DS_TLS == "acme":
    if not DS_PRODUCTION and DS_ACME_DIRECTORY == DS_ACME_DIRECTORY_LETSENCRYPT:
        raise ImproperlyConfigured(
            f"DS_TLS=acme on {DS_DOMAIN!r}: no public CA issues certificates for development "
            "names. Use DS_TLS=internal, or set DS_ACME_DIRECTORY to a private ACME CA."
        )
    if DS_ACME_CA_ROOT and not Path(DS_ACME_CA_ROOT).is_file():
        raise ImproperlyConfigured(f"DS_ACME_CA_ROOT ({DS_ACME_CA_ROOT}) is not a readable file.")

DS_SCHEME = env.str("DS_SCHEME", default="https" if DS_PRODUCTION or DS_TLS_ON else "http")

if DS_SCHEME not in ("http", "https"):
    raise ImproperlyConfigured(f"DS_SCHEME must be 'http' or 'https', not {DS_SCHEME!r}.")
if DS_SCHEME == "http" and DS_PRODUCTION:
    raise ImproperlyConfigured(
        f"DS_SCHEME=http is only allowed for development domains such as 'localhost'; "
        f"{DS_DOMAIN!r} is public, so it must be served over https."
    )
if DS_TLS_ON and DS_SCHEME != "https":
    raise ImproperlyConfigured(f"DS_TLS={DS_TLS} serves https: DS_SCHEME must be https.")
if DS_PANEL_HOST == DS_DOMAIN or not DS_PANEL_HOST.endswith("." + DS_DOMAIN):
    raise ImproperlyConfigured(
        f"DS_PANEL_HOST ({DS_PANEL_HOST!r}) must be a subdomain of DS_DOMAIN ({DS_DOMAIN!r})."
    )

DS_HTTPS = DS_SCHEME == "https"
_DEFAULT_PORT = 443 if DS_HTTPS else 80
# The port in public URLs; behind a TLS proxy set DS_PUBLIC_PORT=443.
DS_PUBLIC_PORT = env.int(
    "DS_PUBLIC_PORT",
    default=DS_HTTPS_PORT if DS_TLS_ON else (_DEFAULT_PORT if DS_PRODUCTION else DS_PORT),
)
DS_PORT_SUFFIX = "" if DS_PUBLIC_PORT == _DEFAULT_PORT else f":{DS_PUBLIC_PORT}"
DS_PANEL_URL = f"{DS_SCHEME}://{DS_PANEL_HOST}{DS_PORT_SUFFIX}"

# --- Core Django ----------------------------------------------------------------------------

DEBUG = env.bool("DEBUG", default=False)
if DEBUG and DS_PRODUCTION:
    raise ImproperlyConfigured("DEBUG must be off on a public domain.")


def _secret_key() -> str:
    """SECRET_KEY or SECRET_KEY_FILE; a development instance makes its own under DS_DATA_DIR."""
    if value := env.str("SECRET_KEY", default=""):
        key = value
    elif path := env.str("SECRET_KEY_FILE", default=""):
        key = Path(path).read_text().strip()
    elif DS_PRODUCTION:
        raise ImproperlyConfigured(
            "Set SECRET_KEY or SECRET_KEY_FILE: a public instance never invents its own key."
        )
    else:
        key_file = DS_DATA_DIR / "secret_key"
        if not key_file.exists():
            DS_DATA_DIR.mkdir(parents=True, exist_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_urlsafe(50))
        key = key_file.read_text().strip()
    if DS_PRODUCTION and (len(key) < 50 or key.startswith("django-insecure") or "change" in key):
        raise ImproperlyConfigured("SECRET_KEY looks like a default or is too short (< 50 chars).")
    return key


SECRET_KEY = _secret_key()

# Appspace hosts never reach Django: the ASGI router sends them to the gateway.
ALLOWED_HOSTS = [DS_PANEL_HOST]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "accounts",
    "appspaces",
    "sandbox",
    "backups",
    "dropserver_site",  # platform-wide management commands (serve)
]

MIDDLEWARE = [
    "dropserver_site.panel_headers.PanelHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before the CSRF check, which reads form bodies: 413 for what no view here would take.
    "accounts.upload_gate.BodyCapMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.upload_gate.UploadTicketMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "dropserver_site.urls"
ASGI_APPLICATION = "dropserver_site.asgi.application"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dropserver_site.context_processors.platform",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DS_DATA_DIR / 'dropserver.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a Celery worker writes; IMMEDIATE avoids
    # "database is locked" on read-then-write transactions.
    # Tests on SQLite use a file too: in-memory SQLite has table locks instead of WAL.
    DATABASES["default"]["TEST"] = {"NAME": str(DS_DATA_DIR / "test.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

# The cache holds allauth's rate-limit counters: share it (Redis) when running several processes.
CACHES = {"default": env.cache_url("CACHE_URL", default=REDIS_URL or "locmemcache://")}
# Instances (or test workers) that share one Redis keep their keys apart with a prefix.
CACHES["default"]["KEY_PREFIX"] = env.str("DS_CACHE_KEY_PREFIX", default="")

# --- Channels -------------------------------------------------------------------------------

CHANNEL_LAYER_URL = env.str("CHANNEL_LAYER_URL", default=REDIS_URL)
if CHANNEL_LAYER_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py's default read timeout (5 s) equals channels-redis's blocking pop
                # (5 s): a longer one keeps an idle subscriber from timing out every round.
                "hosts": [{"address": CHANNEL_LAYER_URL, "socket_timeout": 30}],
                # Gateway processes join the invalidation group (appspaces/gateway/
                # broadcast.py) and renew every minute; a dead process's channel leaves soon.
                "group_expiry": 300,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Daphne processes `serve` runs on one shared listening socket (each is one event loop: one
# core). Their caches stay coherent through the channel layer
# (appspaces/gateway/state/broadcast.py), so without one (the embedded defaults) a single
# process serves, and changes apply at once.
DS_WEB_PROCESSES = env.int(
    "DS_WEB_PROCESSES", default=(os.cpu_count() or 1) if CHANNEL_LAYER_URL else 1
)
if DS_WEB_PROCESSES < 1:
    raise ImproperlyConfigured(f"DS_WEB_PROCESSES must be 1 or more, not {DS_WEB_PROCESSES}.")

# --- Celery ---------------------------------------------------------------------------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DS_DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# Long work is tracked on Job rows, not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE_FILENAME = str(DS_DATA_DIR / "celerybeat-schedule")
# Queues (docs/operations.md, "Celery"): `jobs` for long work someone waits on, so a 2 GB
# restore never holds up `housekeeping` (the periodic sweeps, usage and pruning); `celery` for
# small one-off tasks. `serve` runs one worker per group; each task kind has soft (the task
# unwinds, its job fails with a message) and hard (the worker process is killed) limits.
CELERY_TASK_DEFAULT_QUEUE = "celery"
_MINUTE = 60
_TASK_KINDS = {
    # task: (queue, soft limit, hard limit) in seconds
    "appspaces.tasks.install_app": ("jobs", 30 * _MINUTE, 35 * _MINUTE),
    "appspaces.tasks.appspace_create_task": ("jobs", 15 * _MINUTE, 20 * _MINUTE),
    "appspaces.tasks.appspace_version_change_task": ("jobs", 60 * _MINUTE, 65 * _MINUTE),
    "backups.tasks.backup_run": ("jobs", 120 * _MINUTE, 130 * _MINUTE),
    "backups.tasks.restore_run": ("jobs", 120 * _MINUTE, 130 * _MINUTE),
    "backups.tasks.backups_verify": ("jobs", 60 * _MINUTE, 65 * _MINUTE),  # reads archives
    "backups.tasks.offsite_upload": ("jobs", 120 * _MINUTE, 130 * _MINUTE),
    "backups.tasks.offsite_prune": ("jobs", 60 * _MINUTE, 65 * _MINUTE),  # restic forget --prune
    "backups.tasks.offsite_check": ("jobs", 60 * _MINUTE, 65 * _MINUTE),  # restic check
    "backups.tasks.instance_retention": ("jobs", 60 * _MINUTE, 65 * _MINUTE),  # restic forget
    "backups.tasks.instance_backup_scheduled": ("jobs", 120 * _MINUTE, 130 * _MINUTE),
    "appspaces.tasks.usage_collect": ("housekeeping", 2 * _MINUTE, 3 * _MINUTE),
    "appspaces.tasks.disk_measure": ("housekeeping", 10 * _MINUTE, 12 * _MINUTE),
    "appspaces.tasks.usage_days_prune": ("housekeeping", 5 * _MINUTE, 6 * _MINUTE),
    "appspaces.tasks.blocked_connections_collect": ("housekeeping", 2 * _MINUTE, 3 * _MINUTE),
    "appspaces.tasks.appspaces_sweep": ("housekeeping", 10 * _MINUTE, 12 * _MINUTE),
    "appspaces.tasks.installs_sweep": ("housekeeping", 10 * _MINUTE, 12 * _MINUTE),
    "appspaces.tasks.listings_refresh": ("housekeeping", 10 * _MINUTE, 12 * _MINUTE),
    "appspaces.tasks.trash_empty": ("housekeeping", 10 * _MINUTE, 12 * _MINUTE),
    "backups.tasks.backups_schedule": ("housekeeping", 5 * _MINUTE, 6 * _MINUTE),
    "backups.tasks.backups_prune": ("housekeeping", 10 * _MINUTE, 12 * _MINUTE),
    "backups.tasks.backups_sweep": ("housekeeping", 5 * _MINUTE, 6 * _MINUTE),
    "accounts.tasks.notices_evaluate": ("housekeeping", 3 * _MINUTE, 4 * _MINUTE),
    "appspaces.tasks.listing_refresh": ("celery", 5 * _MINUTE, 6 * _MINUTE),
    "appspaces.tasks.appspace_sandbox_refresh": ("celery", 5 * _MINUTE, 6 * _MINUTE),
}
CELERY_TASK_ROUTES = {name: {"queue": queue} for name, (queue, _, _) in _TASK_KINDS.items()}
# Every queue a task can land on: a worker that must take all work (tests, a one-worker
# deployment) consumes `--queues ",".join(DS_CELERY_QUEUES)`.
DS_CELERY_QUEUES = sorted({CELERY_TASK_DEFAULT_QUEUE} | {q for q, _, _ in _TASK_KINDS.values()})
CELERY_TASK_ANNOTATIONS = {
    name: {"soft_time_limit": soft, "time_limit": hard}
    for name, (_, soft, hard) in _TASK_KINDS.items()
}
# Anything else still gets a hard limit.
CELERY_TASK_TIME_LIMIT = 30 * _MINUTE
# Under DS_LOG_FORMAT=json the worker logs through LOGGING like every other process.
CELERY_WORKER_HIJACK_ROOT_LOGGER = env.str("DS_LOG_FORMAT", default="text") == "text"

# --- Email ----------------------------------------------------------------------------------

_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
EMAIL_FILE_PATH = _email.get("EMAIL_FILE_PATH") or str(DS_DATA_DIR / "mail")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=f"Dropserver <noreply@{DS_DOMAIN}>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Notices ----------------------------------------------------------------------------------
# Owned by notices/ (see docs/operations.md, "Notifications"): what needs someone's attention,
# shown in the panel until resolved and emailed once, then reminded while it stays true.

DS_NOTICE_EVALUATE_SECONDS = env.float("DS_NOTICE_EVALUATE_SECONDS", default=300.0)
DS_NOTICE_REMIND_HOURS = env.float("DS_NOTICE_REMIND_HOURS", default=24.0)
# Admins are told when the free space under DS_DATA_DIR falls below this (well above
# DS_READY_MIN_FREE_MB, where /readyz fails, so there is time to act).
DS_NOTICE_MIN_FREE_MB = env.int("DS_NOTICE_MIN_FREE_MB", default=2048)

# --- Accounts (django-allauth) --------------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
# Invitation-aware sign-up: locks the email field to the invited address (accounts/forms.py).
ACCOUNT_FORMS = {"signup": "accounts.forms.SignupForm"}
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env.str("ACCOUNT_EMAIL_VERIFICATION", default="mandatory")
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_DEFAULT_HTTP_PROTOCOL = DS_SCHEME
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Dropserver] "
# allauth's rate limits stay on; failed logins: 10/min per IP and 5 per account per 5 minutes.
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/300s/key"}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Dropserver"
LOGIN_REDIRECT_URL = "dashboard"
LOGIN_URL = "account_login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Invitations and the first-admin setup link.
DS_INVITATION_DAYS = env.int("DS_INVITATION_DAYS", default=7)
DS_SETUP_LINK_HOURS = env.int("DS_SETUP_LINK_HOURS", default=24)

# --- Panel security baseline ----------------------------------------------------------------

# Host-only cookies (no Domain): appspace subdomains never receive the panel's cookies.
SESSION_COOKIE_DOMAIN = None
CSRF_COOKIE_DOMAIN = None
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = DS_HTTPS
CSRF_COOKIE_SECURE = DS_HTTPS
# The __Host- prefix makes browsers enforce Secure, Path=/ and no Domain.
SESSION_COOKIE_NAME = "__Host-ds_panel" if DS_HTTPS else "ds_panel"
CSRF_COOKIE_NAME = "__Host-ds_csrf" if DS_HTTPS else "ds_csrf"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 14
CSRF_TRUSTED_ORIGINS = [DS_PANEL_URL]

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = DS_HTTPS and env.bool("DS_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365 if DS_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = DS_HTTPS
SECURE_HSTS_PRELOAD = env.bool("DS_HSTS_PRELOAD", default=False)
# Only trust X-Forwarded-Proto when a TLS proxy sets it: our own edge (which overwrites what
# clients send, and is the only way to Daphne on loopback), or one the operator says is there.
DS_TRUST_PROXY_HEADERS = DS_HTTPS and (DS_TLS_ON or _behind_proxy)
if DS_TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Load balancers and systemd probe health over plain HTTP too.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Preloading HSTS is hard to undo, so it is the operator's opt-in (DS_HSTS_PRELOAD), not a default.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'", DS_PANEL_URL, f"{DS_SCHEME}://*.{DS_DOMAIN}{DS_PORT_SUFFIX}"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Static files ---------------------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = DS_DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True  # no collectstatic step needed to run
# STATIC_ROOT only exists once an operator runs collectstatic; finders serve until then.
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Operations: logs and metrics (docs/operations.md) ----------------------------------------
# DS_LOG_FORMAT: text (default) or json, one object per line with the request context.
DS_LOG_FORMAT = env.str("DS_LOG_FORMAT", default="text")
if DS_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured("DS_LOG_FORMAT must be text or json.")
LOGGING = logging_config(DS_LOG_FORMAT, env.str("LOG_LEVEL", default="INFO"))
# /metrics on the panel host: loopback clients (unless DS_BEHIND_PROXY, where every client
# arrives from the proxy) and clients presenting this bearer token; 404 to anyone else.
DS_METRICS_TOKEN = env.str("DS_METRICS_TOKEN", default="") or (
    Path(env.str("DS_METRICS_TOKEN_FILE")).read_text().strip()
    if env.str("DS_METRICS_TOKEN_FILE", default="")
    else ""
)
DS_METRICS_LOOPBACK = not env.bool("DS_BEHIND_PROXY", default=False)
# prometheus-client's multiprocess mode: every process of this instance (web, workers,
# supervisor) writes its figures here; `serve` empties it at start. Fixed under DS_DATA_DIR so
# that each instance (and each test stack) has its own.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(DS_DATA_DIR / "metrics")

# --- Sandbox ----------------------------------------------------------------------------------
# Owned by sandbox/ (see docs/sandbox.md). Every Deno process runs under bubblewrap as its own
# uid (>= DS_SANDBOX_UID_BASE) inside cgroups, started by the supervisor (`manage.py sandboxd`).

DS_SANDBOX_BWRAP = env.str("DS_SANDBOX_BWRAP", default="/usr/bin/bwrap")
DS_SANDBOX_DENO = env.str("DS_SANDBOX_DENO", default="")  # empty: the `deno` PyPI package's binary
DS_SANDBOX_UID_BASE = env.int("DS_SANDBOX_UID_BASE", default=200000)
# The unprivileged system user the web servers, the TLS edge and the Celery workers run as when
# `serve` is started as root (docs/security.md, "Processes and their uids"); only it (and root)
# may use the supervisor's control socket. Created by `make run` as root and by the install
# (scripts/run-as-user.sh). Empty: nothing is dropped, and only root may call the supervisor.
DS_RUN_AS = env.str("DS_RUN_AS", default="dropserver")
DS_SANDBOX_CGROUP_PARENT = env.str("DS_SANDBOX_CGROUP_PARENT", default="dropserver")
# Set by the supervisor's systemd unit (Delegate=yes): sandbox cgroups go below the unit's own
# cgroup instead of at the top of each hierarchy (sandbox/walls/delegation.py).
DS_SANDBOX_CGROUP_DELEGATED = env.bool("DS_SANDBOX_CGROUP_DELEGATED", default=False)
# Development only: run without bubblewrap/cgroups/root when they are missing. Logged loudly.
DS_SANDBOX_UNSAFE_DEV = env.bool("DS_SANDBOX_UNSAFE_DEV", default=False)
DS_SANDBOX_MAX_RUNNING = env.int("DS_SANDBOX_MAX_RUNNING", default=32)
DS_SANDBOX_MIN_FREE_MB = env.int("DS_SANDBOX_MIN_FREE_MB", default=256)
DS_SANDBOX_MAX_JOBS = env.int("DS_SANDBOX_MAX_JOBS", default=2)  # concurrent run_once
DS_SANDBOX_IDLE_TIMEOUT = env.float("DS_SANDBOX_IDLE_TIMEOUT", default=600.0)
DS_SANDBOX_START_TIMEOUT = env.float("DS_SANDBOX_START_TIMEOUT", default=10.0)
DS_SANDBOX_STOP_GRACE = env.float("DS_SANDBOX_STOP_GRACE", default=3.0)
# CPU quota until the ready handshake (Deno's start-up is CPU-heavy), then the sandbox's own.
DS_SANDBOX_START_CPU_PERCENT = env.int("DS_SANDBOX_START_CPU_PERCENT", default=100)
DS_SANDBOX_CRASH_LIMIT = env.int("DS_SANDBOX_CRASH_LIMIT", default=5)  # crashes in the window
DS_SANDBOX_CRASH_WINDOW = env.float("DS_SANDBOX_CRASH_WINDOW", default=300.0)
DS_SANDBOX_RESTART_BACKOFF = env.float("DS_SANDBOX_RESTART_BACKOFF", default=0.5)  # doubles
DS_SANDBOX_LOG_MAX_BYTES = env.int("DS_SANDBOX_LOG_MAX_BYTES", default=1024 * 1024)
DS_SANDBOX_LOG_KEEP = env.int("DS_SANDBOX_LOG_KEEP", default=3)  # rotated files kept
# Default limits of a sandbox when its spec gives none.
DS_SANDBOX_MEMORY_MB = env.int("DS_SANDBOX_MEMORY_MB", default=256)
DS_SANDBOX_CPU_PERCENT = env.int("DS_SANDBOX_CPU_PERCENT", default=50)
DS_SANDBOX_PIDS = env.int("DS_SANDBOX_PIDS", default=64)
DS_SANDBOX_TMPFS_MB = env.int("DS_SANDBOX_TMPFS_MB", default=16)
DS_SANDBOX_HEAP_MB = env.int("DS_SANDBOX_HEAP_MB", default=128)
# The instance ceiling: all sandboxes together (their parent cgroup), so Daphne, the database
# and the workers always keep room. 0: the host's memory minus DS_SANDBOXES_RESERVE_MB, and
# its CPUs minus half a core (in % of one core).
DS_SANDBOXES_MEMORY_MB = env.int("DS_SANDBOXES_MEMORY_MB", default=0)
DS_SANDBOXES_RESERVE_MB = env.int("DS_SANDBOXES_RESERVE_MB", default=1024)
DS_SANDBOXES_CPU_PERCENT = env.int("DS_SANDBOXES_CPU_PERCENT", default=0)
DS_SANDBOXES_PIDS = env.int("DS_SANDBOXES_PIDS", default=4096)
# Disk IO of all sandboxes together on the block device under DS_DATA_DIR (MB/s, operations/s;
# blkio.throttle on the parent cgroup in v1, io.max in v2). 0: no ceiling.
DS_SANDBOXES_IO_READ_MBPS = env.int("DS_SANDBOXES_IO_READ_MBPS", default=0)
DS_SANDBOXES_IO_WRITE_MBPS = env.int("DS_SANDBOXES_IO_WRITE_MBPS", default=0)
DS_SANDBOXES_IO_READ_IOPS = env.int("DS_SANDBOXES_IO_READ_IOPS", default=0)
DS_SANDBOXES_IO_WRITE_IOPS = env.int("DS_SANDBOXES_IO_WRITE_IOPS", default=0)
# The kernel-enforced disk quota (sandbox.walls.diskimage): each appspace's data in a loop-mounted
# ext4 image of its disk_mb. Unset (None): on where the host can loop-mount (root, loop devices,
# e2fsprogs), else the measured quota (appspaces.usage.quota) with check W002. 0: measured only.
DS_SANDBOX_DISK_IMAGES = (
    env.bool("DS_SANDBOX_DISK_IMAGES") if os.environ.get("DS_SANDBOX_DISK_IMAGES") else None
)

# --- App packages ---------------------------------------------------------------------------
# Limits for unpacking untrusted app packages (packages.extraction) and for the platform's
# own outbound fetch of package URLs and app listings (packages.fetch).

DS_APP_MAX_PACKAGE_MB = env.int("DS_APP_MAX_PACKAGE_MB", default=50)
DS_APP_MAX_UNPACKED_MB = env.int("DS_APP_MAX_UNPACKED_MB", default=100)
DS_APP_MAX_FILE_MB = env.int("DS_APP_MAX_FILE_MB", default=50)
DS_APP_MAX_FILES = env.int("DS_APP_MAX_FILES", default=5000)
# Unpacked/compressed; code compresses ~3-10x, a bomb ~1000x. 0 turns the check off.
DS_APP_MAX_COMPRESSION_RATIO = env.int("DS_APP_MAX_COMPRESSION_RATIO", default=200)
DS_FETCH_CONNECT_TIMEOUT = env.float("DS_FETCH_CONNECT_TIMEOUT", default=10.0)
DS_FETCH_READ_TIMEOUT = env.float("DS_FETCH_READ_TIMEOUT", default=30.0)
DS_FETCH_TOTAL_TIMEOUT = env.float("DS_FETCH_TOTAL_TIMEOUT", default=300.0)
DS_FETCH_MAX_REDIRECTS = env.int("DS_FETCH_MAX_REDIRECTS", default=5)
DS_FETCH_MAX_LISTING_KB = env.int("DS_FETCH_MAX_LISTING_KB", default=1024)
# Lets the fetch reach 127.0.0.1/::1 (never private or metadata addresses): for test servers only.
DS_FETCH_ALLOW_LOOPBACK = env.bool("DS_FETCH_ALLOW_LOOPBACK", default=False)
if DS_FETCH_ALLOW_LOOPBACK and DS_PRODUCTION:
    raise ImproperlyConfigured("DS_FETCH_ALLOW_LOOPBACK is for tests; never on a public domain.")

# --- Gateway ----------------------------------------------------------------------------------
# Owned by appspaces/gateway (see docs/gateway.md): limits and timeouts of every appspace request.

DS_GATEWAY_MAX_BODY_BYTES = env.int("DS_GATEWAY_MAX_BODY_BYTES", default=10 * 1024 * 1024)
DS_GATEWAY_MAX_HEADERS = env.int("DS_GATEWAY_MAX_HEADERS", default=100)  # request headers
DS_GATEWAY_MAX_HEADER_BYTES = env.int("DS_GATEWAY_MAX_HEADER_BYTES", default=12 * 1024)  # total
# What the app may answer with: its response head (status line and headers), in bytes.
DS_GATEWAY_MAX_RESPONSE_HEAD = env.int("DS_GATEWAY_MAX_RESPONSE_HEAD", default=64 * 1024)
DS_GATEWAY_CONNECT_TIMEOUT = env.float("DS_GATEWAY_CONNECT_TIMEOUT", default=5.0)
DS_GATEWAY_FIRST_BYTE_TIMEOUT = env.float("DS_GATEWAY_FIRST_BYTE_TIMEOUT", default=60.0)
DS_GATEWAY_IDLE_TIMEOUT = env.float("DS_GATEWAY_IDLE_TIMEOUT", default=60.0)  # between body reads
# Cached appspace config and sessions are re-read at least this often (the bound on how long a
# change made in another process goes unseen); changes made in this process apply at once.
DS_GATEWAY_CACHE_TTL = env.float("DS_GATEWAY_CACHE_TTL", default=2.0)
DS_GATEWAY_ENSURE_INTERVAL = env.float("DS_GATEWAY_ENSURE_INTERVAL", default=1.0)
# CSP reports accepted per appspace per minute, per web process (gateway/csp_reports.py).
DS_CSP_REPORTS_PER_MINUTE = env.int("DS_CSP_REPORTS_PER_MINUTE", default=60)
DS_GATEWAY_POOL_IDLE = env.int("DS_GATEWAY_POOL_IDLE", default=32)  # kept-open conns per sandbox
DS_GATEWAY_STATIC_CACHE_MB = env.int("DS_GATEWAY_STATIC_CACHE_MB", default=32)
DS_GATEWAY_STATIC_CACHE_FILE_KB = env.int("DS_GATEWAY_STATIC_CACHE_FILE_KB", default=256)
DS_GATEWAY_WS_MAX_MESSAGE_BYTES = env.int("DS_GATEWAY_WS_MAX_MESSAGE_BYTES", default=1024 * 1024)
DS_GATEWAY_WS_MAX_PENDING = env.int("DS_GATEWAY_WS_MAX_PENDING", default=64)  # messages queued
DS_GATEWAY_LOGIN_TOKEN_SECONDS = env.int("DS_GATEWAY_LOGIN_TOKEN_SECONDS", default=60)
DS_GATEWAY_SESSION_DAYS = env.int("DS_GATEWAY_SESSION_DAYS", default=14)

# --- App installs ---------------------------------------------------------------------------
# Owned by appspaces/installs/: time limits of the sandbox runs at install,
# how often app listings are checked for newer versions, and the periodic upkeep.

DS_APP_INIT_TIMEOUT = env.float("DS_APP_INIT_TIMEOUT", default=15.0)  # seconds
DS_APP_WARM_TIMEOUT = env.float("DS_APP_WARM_TIMEOUT", default=60.0)  # seconds
DS_LISTING_CHECK_HOURS = env.float("DS_LISTING_CHECK_HOURS", default=6.0)
# An install waiting for its owner to accept warnings is cancelled after this long.
DS_INSTALL_CONFIRM_HOURS = env.float("DS_INSTALL_CONFIRM_HOURS", default=24.0)

# --- Appspaces --------------------------------------------------------------------------------
# Owned by appspaces/lifecycle/ and appspaces/network/: what owners may choose when they create
# an appspace, and the periodic upkeep of appspaces.

# Names no appspace may take (besides the panel's own label): they mean something to people or
# to mail and DNS setups. Comma-separated; replaces the default list.
DS_RESERVED_SUBDOMAINS = env.list(
    "DS_RESERVED_SUBDOMAINS",
    default=[
        "www",
        "admin",
        "api",
        "mail",
        "smtp",
        "imap",
        "pop",
        "pop3",
        "ftp",
        "dropid",
        "dropserver",
        "panel",
        "static",
        "media",
        "assets",
        "cdn",
        "ns",
        "ns1",
        "ns2",
        "dns",
        "mx",
        "autoconfig",
        "autodiscover",
        "webmail",
        "localhost",
        "login",
        "auth",
        "account",
        "accounts",
        "status",
        "help",
        "support",
        "root",
        "postmaster",
        "hostmaster",
        "abuse",
        "security",
        "wpad",
        "isatap",
    ],
)
# Days a deleted (or renamed) appspace's name stays unavailable to other owners, so links,
# bookmarks and browser state of the old appspace do not pass to a stranger at once. 0: none.
# Administrators can release a name early (Django admin, "Freed subdomains").
DS_SUBDOMAIN_QUARANTINE_DAYS = env.int("DS_SUBDOMAIN_QUARANTINE_DAYS", default=30)
# Resource limits of an appspace: owners choose within [MIN, MAX]; DEFAULT for a new one.
DS_APPSPACE_MIN_MEMORY_MB = env.int("DS_APPSPACE_MIN_MEMORY_MB", default=64)
DS_APPSPACE_MAX_MEMORY_MB = env.int("DS_APPSPACE_MAX_MEMORY_MB", default=1024)
DS_APPSPACE_DEFAULT_MEMORY_MB = env.int("DS_APPSPACE_DEFAULT_MEMORY_MB", default=256)
DS_APPSPACE_MIN_CPU_PERCENT = env.int("DS_APPSPACE_MIN_CPU_PERCENT", default=5)
DS_APPSPACE_MAX_CPU_PERCENT = env.int("DS_APPSPACE_MAX_CPU_PERCENT", default=100)
DS_APPSPACE_DEFAULT_CPU_PERCENT = env.int("DS_APPSPACE_DEFAULT_CPU_PERCENT", default=50)
DS_APPSPACE_MIN_DISK_MB = env.int("DS_APPSPACE_MIN_DISK_MB", default=10)
DS_APPSPACE_MAX_DISK_MB = env.int("DS_APPSPACE_MAX_DISK_MB", default=10 * 1024)
DS_APPSPACE_DEFAULT_DISK_MB = env.int("DS_APPSPACE_DEFAULT_DISK_MB", default=1024)
# What one person may hold in all (appspaces/allowances.py): appspaces owned, apps installed,
# and the sums of their appspaces' disk quotas and memory limits. 0: no limit. Admins override
# them per person in the Django admin (the user's page, "Allowance").
DS_ALLOWANCE_APPSPACES = env.int("DS_ALLOWANCE_APPSPACES", default=10)
DS_ALLOWANCE_APPS = env.int("DS_ALLOWANCE_APPS", default=20)
DS_ALLOWANCE_DISK_MB = env.int("DS_ALLOWANCE_DISK_MB", default=20 * 1024)
DS_ALLOWANCE_MEMORY_MB = env.int("DS_ALLOWANCE_MEMORY_MB", default=4 * 1024)
# Disk IO of each appspace on the block device under DS_DATA_DIR (cgroup v1 blkio.throttle,
# v2 io.max): MB/s and operations/s, read and write. 0: no limit. What v1 actually throttles
# (reads, direct and fsync'd writes; not background writeback): docs/sandbox.md.
DS_APPSPACE_DEFAULT_IO_READ_MBPS = env.int("DS_APPSPACE_DEFAULT_IO_READ_MBPS", default=100)
DS_APPSPACE_DEFAULT_IO_WRITE_MBPS = env.int("DS_APPSPACE_DEFAULT_IO_WRITE_MBPS", default=50)
# Owners may set an appspace's MB/s within [1, MAX] on its page.
DS_APPSPACE_MAX_IO_READ_MBPS = env.int("DS_APPSPACE_MAX_IO_READ_MBPS", default=500)
DS_APPSPACE_MAX_IO_WRITE_MBPS = env.int("DS_APPSPACE_MAX_IO_WRITE_MBPS", default=200)
DS_APPSPACE_DEFAULT_IO_READ_IOPS = env.int("DS_APPSPACE_DEFAULT_IO_READ_IOPS", default=2000)
DS_APPSPACE_DEFAULT_IO_WRITE_IOPS = env.int("DS_APPSPACE_DEFAULT_IO_WRITE_IOPS", default=1000)
DS_APPSPACE_MAX_IO_READ_IOPS = env.int("DS_APPSPACE_MAX_IO_READ_IOPS", default=10000)
DS_APPSPACE_MAX_IO_WRITE_IOPS = env.int("DS_APPSPACE_MAX_IO_WRITE_IOPS", default=5000)
# Longest a migration may run in the sandbox (creation, and a change of version).
DS_APPSPACE_MIGRATE_TIMEOUT = env.float("DS_APPSPACE_MIGRATE_TIMEOUT", default=300.0)
# The tail of an appspace's log shown on its page.
DS_APPSPACE_LOG_TAIL_KB = env.int("DS_APPSPACE_LOG_TAIL_KB", default=32)
# A creation or version change whose worker has not reported for this long was interrupted.
DS_APPSPACE_JOB_STALE_MINUTES = env.int("DS_APPSPACE_JOB_STALE_MINUTES", default=30)

# --- Usage ------------------------------------------------------------------------------------
# Owned by appspaces/usage/ (see docs/operations.md, "Usage and quotas"): how often usage is
# sampled and disks measured, when an appspace over its disk quota may write again, and how
# long daily usage is kept.

# Running sandboxes' cgroup counters (CPU, running time, memory peak, IO) are sampled this often;
# what a sandbox does between its last sample and its stop is not counted.
DS_USAGE_COLLECT_SECONDS = env.float("DS_USAGE_COLLECT_SECONDS", default=60.0)
# Every appspace's data dir is measured this often; running ones (the only ones that can grow)
# at most this often by the collection too, which bounds how far past its quota an app can write.
DS_USAGE_DISK_SECONDS = env.float("DS_USAGE_DISK_SECONDS", default=600.0)
DS_USAGE_DISK_RUNNING_SECONDS = env.float("DS_USAGE_DISK_RUNNING_SECONDS", default=60.0)
# Data made read-only over the quota becomes writable again at or below this % of the quota.
DS_USAGE_QUOTA_RESUME_PERCENT = env.int("DS_USAGE_QUOTA_RESUME_PERCENT", default=95)
DS_USAGE_KEEP_DAYS = env.int("DS_USAGE_KEEP_DAYS", default=400)  # daily usage rows
# Each web process adds the requests it answered to the day's usage row this often.
DS_USAGE_REQUESTS_FLUSH_SECONDS = env.float("DS_USAGE_REQUESTS_FLUSH_SECONDS", default=30.0)

# --- Backups ----------------------------------------------------------------------------------
# Owned by backups/ (see docs/backups.md): schedule bounds, retention defaults, the per-user
# storage cap, compression and the periodic tasks. Archives live in DS_DATA_DIR/backups/.

# How often an appspace is backed up: its owner picks within [MIN, MAX] hours.
DS_BACKUP_DEFAULT_INTERVAL_HOURS = env.int("DS_BACKUP_DEFAULT_INTERVAL_HOURS", default=24)
DS_BACKUP_MIN_INTERVAL_HOURS = env.int("DS_BACKUP_MIN_INTERVAL_HOURS", default=1)
DS_BACKUP_MAX_INTERVAL_HOURS = env.int("DS_BACKUP_MAX_INTERVAL_HOURS", default=24 * 7)
# A failed scheduled backup is tried again after this long (not at every tick).
DS_BACKUP_RETRY_MINUTES = env.int("DS_BACKUP_RETRY_MINUTES", default=60)
# Retention defaults of a new appspace, and the most an owner may ask to keep.
DS_BACKUP_KEEP_DAILY = env.int("DS_BACKUP_KEEP_DAILY", default=7)
DS_BACKUP_KEEP_WEEKLY = env.int("DS_BACKUP_KEEP_WEEKLY", default=4)
DS_BACKUP_KEEP_PRE_MIGRATION_DAYS = env.int("DS_BACKUP_KEEP_PRE_MIGRATION_DAYS", default=30)
DS_BACKUP_MAX_KEEP_DAILY = env.int("DS_BACKUP_MAX_KEEP_DAILY", default=31)
DS_BACKUP_MAX_KEEP_WEEKLY = env.int("DS_BACKUP_MAX_KEEP_WEEKLY", default=52)
DS_BACKUP_MAX_KEEP_PRE_MIGRATION_DAYS = env.int(
    "DS_BACKUP_MAX_KEEP_PRE_MIGRATION_DAYS", default=365
)
# Archive bytes one user's backups may take, all appspaces together; 0: no cap.
DS_BACKUP_USER_CAP_MB = env.int("DS_BACKUP_USER_CAP_MB", default=10 * 1024)
# zstd level (3: measured faster than `tar czf` and smaller; see docs/backups.md) and threads.
DS_BACKUP_ZSTD_LEVEL = env.int("DS_BACKUP_ZSTD_LEVEL", default=3)
DS_BACKUP_ZSTD_THREADS = env.int("DS_BACKUP_ZSTD_THREADS", default=2)
DS_BACKUP_VERIFY_AFTER_WRITE = env.bool("DS_BACKUP_VERIFY_AFTER_WRITE", default=True)
# Uploaded archives (restore, import) and what one restore may unpack.
DS_BACKUP_MAX_UPLOAD_MB = env.int("DS_BACKUP_MAX_UPLOAD_MB", default=2048)
DS_BACKUP_MAX_FILES = env.int("DS_BACKUP_MAX_FILES", default=1_000_000)
# A backup whose worker has not reported for this long is taken as dead: its appspace is thawed
# and its leftovers removed by the sweep.
DS_BACKUP_STALE_SECONDS = env.int("DS_BACKUP_STALE_SECONDS", default=60)
# The data a restore replaced is kept (appspaces/<id>/.previous-*) until the appspace runs on the
# restored data, and at most this long.
DS_BACKUP_KEEP_PREVIOUS_DAYS = env.int("DS_BACKUP_KEEP_PREVIOUS_DAYS", default=7)
DS_BACKUP_VERIFY_DAYS = env.int("DS_BACKUP_VERIFY_DAYS", default=7)  # re-read every archive
# Off-site copies (backups/offsite/, docs/backups.md): a restic repository string (a local path,
# sftp:, s3:, rest:, ...) and the file holding its password; empty: no off-site copies. Backend
# credentials (AWS_*, B2_*, ...) are read by restic from the environment, never from the DB.
DS_BACKUP_REPOSITORY = env.str("DS_BACKUP_REPOSITORY", default="")
DS_BACKUP_REPOSITORY_PASSWORD_FILE = env.str("DS_BACKUP_REPOSITORY_PASSWORD_FILE", default="")
# sftp: repositories: the private key ssh logs in with, and the known_hosts file that pins the
# server's host key (host keys are always checked strictly; empty: the service user's ~/.ssh).
DS_BACKUP_SSH_KEY_FILE = env.str("DS_BACKUP_SSH_KEY_FILE", default="")
DS_BACKUP_SSH_KNOWN_HOSTS = env.str("DS_BACKUP_SSH_KNOWN_HOSTS", default="")
# Upload attempts of one backup (backoff doubles from OFFSITE_RETRY_SECONDS), the integrity
# check's interval and how much pack data each check re-reads (restic --read-data-subset).
DS_BACKUP_OFFSITE_RETRIES = env.int("DS_BACKUP_OFFSITE_RETRIES", default=5)
DS_BACKUP_OFFSITE_RETRY_SECONDS = env.int("DS_BACKUP_OFFSITE_RETRY_SECONDS", default=60)
DS_BACKUP_OFFSITE_CHECK_HOURS = env.int("DS_BACKUP_OFFSITE_CHECK_HOURS", default=24)
DS_BACKUP_OFFSITE_CHECK_READ = env.str("DS_BACKUP_OFFSITE_CHECK_READ", default="5%")
# Whole-instance backups (manage.py backup_instance): every this many hours (0: off) into
# DS_BACKUP_INSTANCE_DIR (one folder per snapshot), or with no folder into the repository; an
# appspace whose newest verified backup is older than DS_BACKUP_INSTANCE_FRESH_MINUTES is backed
# up first. In the repository this instance keeps its newest KEEP_LAST snapshots and the newest
# of each of the last KEEP_DAILY days and KEEP_WEEKLY weeks (backups/instance/repository.py).
DS_BACKUP_INSTANCE_HOURS = env.int("DS_BACKUP_INSTANCE_HOURS", default=0)
DS_BACKUP_INSTANCE_DIR = env.str("DS_BACKUP_INSTANCE_DIR", default="")
DS_BACKUP_INSTANCE_FRESH_MINUTES = env.int("DS_BACKUP_INSTANCE_FRESH_MINUTES", default=60)
DS_BACKUP_INSTANCE_KEEP_LAST = env.int("DS_BACKUP_INSTANCE_KEEP_LAST", default=3)
DS_BACKUP_INSTANCE_KEEP_DAILY = env.int(
    "DS_BACKUP_INSTANCE_KEEP_DAILY", default=DS_BACKUP_KEEP_DAILY
)
DS_BACKUP_INSTANCE_KEEP_WEEKLY = env.int(
    "DS_BACKUP_INSTANCE_KEEP_WEEKLY", default=DS_BACKUP_KEEP_WEEKLY
)

# --- Health -----------------------------------------------------------------------------------
# Owned by dropserver_site/observe/health.py (see docs/operations.md, "Health"): what /readyz
# requires.

DS_READY_MIN_FREE_MB = env.int("DS_READY_MIN_FREE_MB", default=512)  # free under DS_DATA_DIR
# /readyz fails when the panel host's certificate expires within this many days (0: expired).
DS_READY_CERT_DAYS = env.int("DS_READY_CERT_DAYS", default=0)
DS_READY_TIMEOUT = env.float("DS_READY_TIMEOUT", default=2.0)  # seconds, per check

# --- Periodic tasks (Celery beat) -------------------------------------------------------------
# Every periodic task of the platform, in one place; the intervals are the settings above.

CELERY_BEAT_SCHEDULE = {
    # App installs
    "app-listings-refresh": {
        "task": "appspaces.tasks.listings_refresh",
        "schedule": DS_LISTING_CHECK_HOURS * 3600,
    },
    "app-installs-sweep": {"task": "appspaces.tasks.installs_sweep", "schedule": 600.0},
    # Appspaces
    "appspaces-blocked-connections": {
        "task": "appspaces.tasks.blocked_connections_collect",
        "schedule": 60.0,
    },
    "appspaces-sweep": {"task": "appspaces.tasks.appspaces_sweep", "schedule": 300.0},
    # Usage
    "usage-collect": {
        "task": "appspaces.tasks.usage_collect",
        "schedule": DS_USAGE_COLLECT_SECONDS,
    },
    "usage-disk-measure": {
        "task": "appspaces.tasks.disk_measure",
        "schedule": DS_USAGE_DISK_SECONDS,
    },
    "usage-days-prune": {"task": "appspaces.tasks.usage_days_prune", "schedule": 24 * 3600.0},
    # Backups
    "backups-schedule": {"task": "backups.tasks.backups_schedule", "schedule": 300.0},
    "backups-prune": {"task": "backups.tasks.backups_prune", "schedule": 3600.0},
    "backups-offsite-prune": {"task": "backups.tasks.offsite_prune", "schedule": 6 * 3600.0},
    "backups-offsite-check": {
        "task": "backups.tasks.offsite_check",
        "schedule": DS_BACKUP_OFFSITE_CHECK_HOURS * 3600.0,
    },
    "backups-sweep": {"task": "backups.tasks.backups_sweep", "schedule": 60.0},
    "backups-verify": {"task": "backups.tasks.backups_verify", "schedule": 6 * 3600.0},
    "backups-instance": {"task": "backups.tasks.instance_backup_scheduled", "schedule": 900.0},
    # Notices
    "notices-evaluate": {
        "task": "accounts.tasks.notices_evaluate",
        "schedule": DS_NOTICE_EVALUATE_SECONDS,
    },
}
# A run beat sent that no worker took within one period is dropped, not piled up behind a stall.
for _entry in CELERY_BEAT_SCHEDULE.values():
    _entry.setdefault("options", {}).setdefault("expires", float(_entry["schedule"]))
