"""The console log handler (dropserver_site/observe/logs.py): line by line by default; in blocks
in the web processes, where a line below WARNING is written within the block time and one at
WARNING or above at once, after everything before it. Read back from the file it writes, as
another process (journald, a terminal) would."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from dropserver_site.observe.logs import ConsoleHandler, SecondStamps
from tests.sandbox.fixtures import poll


@pytest.fixture
def logger(tmp_path):
    stream = open(tmp_path / "stderr", "w")  # noqa: SIM115 - the handler owns it
    handler = ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"tests.logs.{tmp_path.name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield log, handler, tmp_path / "stderr"
    finally:
        log.removeHandler(handler)
        handler.close()
        stream.close()


def written(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_by_default_each_line_is_written_at_once(logger):
    log, _, path = logger
    log.info("one")
    assert written(path) == ["INFO one"]


def test_in_blocks_an_info_line_waits_and_then_arrives(logger):
    log, handler, path = logger
    handler.write_in_blocks(0.3)
    log.info("waits")
    assert written(path) == []  # still in the block
    started = time.monotonic()
    poll(lambda: written(path))
    assert written(path) == ["INFO waits"]
    assert time.monotonic() - started < 2  # within the block time, not at exit


def test_in_blocks_a_warning_takes_everything_before_it_out_at_once(logger):
    log, handler, path = logger
    handler.write_in_blocks(30)
    log.info("first")
    log.info("second")
    assert written(path) == []
    log.warning("now")
    assert written(path) == ["INFO first", "INFO second", "WARNING now"]


def test_closing_writes_what_waits(logger):
    log, handler, path = logger
    handler.write_in_blocks(30)
    log.info("at exit")
    handler.flush()  # what logging.shutdown() does for every handler when the process exits
    assert written(path) == ["INFO at exit"]


def test_time_stamps_formatted_once_a_second_are_the_usual_ones():
    cached = SecondStamps("%(asctime)s")
    usual = logging.Formatter("%(asctime)s")
    for created in (1_796_000_000.001, 1_796_000_000.999, 1_796_000_001.5, 1_796_000_000.25):
        record = logging.makeLogRecord({"created": created, "msecs": (created % 1) * 1000})
        assert cached.formatTime(record) == usual.formatTime(record)
