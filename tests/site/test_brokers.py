"""The Celery worker runs on each broker Dropserver supports: the embedded filesystem
transport (no server), Redis and RabbitMQ — checked with a real worker answering a ping."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def broker_urls() -> dict[str, str]:
    return {
        "filesystem": "filesystem://",
        "redis": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1"),
        "rabbitmq": os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    }


@pytest.mark.parametrize("broker", ["filesystem", "redis", "rabbitmq"])
def test_it_runs_a_worker_on_the_broker(broker, ds_data_dir, tmp_path):
    env = dict(os.environ, DS_DATA_DIR=str(ds_data_dir), PYTHONUNBUFFERED="1")
    env.pop("DATABASE_URL", None)  # the worker needs no database to answer a ping
    env["CELERY_BROKER_URL"] = broker_urls()[broker]
    node = f"test-{broker}-{uuid.uuid4().hex[:8]}@localhost"
    celery = [sys.executable, "-m", "celery", "-A", "dropserver_site"]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [*celery, "worker", "--pool", "solo", "--hostname", node, "--loglevel", "INFO",
             "--queues", f"q-{uuid.uuid4().hex[:8]}"],
            cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        answer = ""
        while time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            result = subprocess.run(
                [*celery, "inspect", "ping", "--destination", node, "--timeout", "3"],
                cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            answer = result.stdout + result.stderr
            if result.returncode == 0 and "pong" in answer:
                break
        assert "pong" in answer, f"no answer from {node}: {answer}\n{log.read_text()[-2000:]}"
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
