# Environment of the test suite: this machine's PostgreSQL and Redis (override to taste).
DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/dropserver}
REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
CELERY_BROKER_URL=${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/1}
