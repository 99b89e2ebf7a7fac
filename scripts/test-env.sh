# Environment of the test suite: this machine's PostgreSQL and Redis (override to taste).
DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/dropserver}
REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
CELERY_BROKER_URL=${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/1}
# No test ever reaches a public ACME CA: a process started with DS_TLS=acme and no directory of
# its own gets one that nothing listens on (the TLS tests run Pebble on loopback).
DS_ACME_DIRECTORY=${DS_ACME_DIRECTORY:-https://127.0.0.1:9/no-public-acme-in-tests}
# Least privilege is tested where it is asked for (tests/sandbox/test_control_access.py,
# tests/site/test_serve_privileges.py set DS_RUN_AS to their own test user); everywhere else the
# suite behaves the same whether or not this host has a `dropserver` user.
DS_RUN_AS=
