"""librdkafka's repeated complaints (a broker down) reach the log once a minute."""

from __future__ import annotations

import logging

from sluiceway.streaming.kafka import _Repeats


def record(text: str) -> logging.LogRecord:
    return logging.LogRecord("k", logging.ERROR, __file__, 1, text, None, None)


def test_the_same_message_with_other_numbers_is_let_through_once_a_minute() -> None:
    repeats = _Repeats(every_s=60)

    said = [
        repeats.filter(record("FAIL 127.0.0.1:9092/1: Connect failed after 3 ms")),
        repeats.filter(record("FAIL 127.0.0.1:9092/1: Connect failed after 5 ms")),
        repeats.filter(record("REQTMOUT timed out")),
    ]

    assert said == [True, False, True]
    assert _Repeats(every_s=0).filter(record("x")) and _Repeats(every_s=0).filter(record("x"))
