"""Whole-batch position comparisons (streaming.positions) agree with the sources' one-by-one `position_after`."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from sluiceway.errors import SourceError
from sluiceway.streaming.base import MESSAGE_SCHEMA, integer_order_keys
from sluiceway.streaming.positions import PartitionPositions, first_of_each


class _RedisLikeSource:
    """Redis entry ids: "ms-seq" compared as two numbers."""

    @staticmethod
    def _key(entry_id: str) -> tuple[int, int]:
        ms, _, seq = entry_id.partition("-")
        return int(ms), int(seq or 0)

    def position_after(self, msg_id: str, committed: str) -> bool:
        return self._key(msg_id) > self._key(committed)

    def order_keys(self, msg_ids: pa.Array) -> pa.Array:
        return integer_order_keys(msg_ids, with_sequence=True)


class _OneByOneSource(_RedisLikeSource):
    order_keys = None  # type: ignore[assignment]


def _messages(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.table(
        {
            "partition": [p for p, _ in rows],
            "msg_id": [i for _, i in rows],
            "payload": [b"{}"] * len(rows),
            "enqueued_at": pa.array([None] * len(rows), pa.timestamp("ms", tz="UTC")),
            "deliveries": pa.array([1] * len(rows), pa.int32()),
        },
        schema=MESSAGE_SCHEMA,
    )


def _positions(source: object, committed: dict[str, str]) -> PartitionPositions:
    return PartitionPositions(source, committed)  # type: ignore[arg-type]


def _tuples(keys: list[pa.Array]) -> list[tuple[int, ...]]:
    return list(zip(*(k.to_pylist() for k in keys), strict=True))


def test_integer_keys_sort_like_numbers() -> None:
    ids = ["9", "10", "100", "2", "18446744073709551615"]
    keys = _tuples(integer_order_keys(pa.array(ids)))
    assert [i for _, i in sorted(zip(keys, ids, strict=True))] == sorted(ids, key=int)


def test_entry_ids_sort_by_ms_then_seq_and_a_bare_ms_is_seq_zero() -> None:
    ids = ["10-0", "9-10", "9-9", "10", "10-1", "1700000000000-3"]
    keys = _tuples(integer_order_keys(pa.array(ids), with_sequence=True))
    order = [i for _, i in sorted(zip(keys, ids, strict=True))]
    assert order == ["9-9", "9-10", "10", "10-0", "10-1", "1700000000000-3"]
    assert keys[0] == keys[3], "'10' and '10-0' are the same position"


@pytest.mark.parametrize("bad", ["1-x", "-1", "", "1-2-3", "1" * 21, "18446744073709551616-0"])
def test_an_id_of_another_form_is_refused_by_name(bad: str) -> None:
    with pytest.raises(SourceError, match="is not a message position") as caught:
        integer_order_keys(pa.array(["1-0", bad]), with_sequence=True)
    assert repr(bad) in str(caught.value)


def test_an_offset_that_is_not_a_number_is_refused_by_name() -> None:
    with pytest.raises(SourceError, match="'7a' is not a message position"):
        integer_order_keys(pa.array(["1", "7a"]))


def test_batch_comparisons_agree_with_position_after_on_random_batches() -> None:
    rng = random.Random(3)
    for _ in range(50):
        rows = [
            (rng.choice(["a", "b", "c"]), f"{rng.randint(0, 30)}-{rng.randint(0, 12)}")
            for _ in range(rng.randint(1, 60))
        ]
        # first deliveries may be committed too (a recreated consumer group)
        committed = {p: f"{rng.randint(0, 30)}-{rng.randint(0, 12)}" for p in ("a", "b")}
        batch = _messages(rows)
        fast, slow = (
            _positions(_RedisLikeSource(), committed),
            _positions(_OneByOneSource(), committed),
        )
        assert fast.not_committed(batch).to_pylist() == slow.not_committed(batch).to_pylist()
        fresh, fresh_keys = fast.fresh(batch, None)
        if fresh.num_rows:
            assert fresh_keys is not None
            assert _tuples(fresh_keys) == _tuples(
                integer_order_keys(fresh.column("msg_id").combine_chunks(), with_sequence=True)
            ), "the order keys were not filtered with their messages"
            fast_newest = fast.newest(fresh, fresh_keys)
            slow_newest = slow.newest(fresh)
            assert {p: _RedisLikeSource._key(i) for p, i in fast_newest.items()} == {
                p: _RedisLikeSource._key(i) for p, i in slow_newest.items()
            }


def test_a_batch_wholly_after_the_committed_position_is_kept_whole() -> None:
    batch = _messages([("a", "5-0"), ("a", "6-0")])
    positions = _positions(_RedisLikeSource(), {"a": "4-9"})
    assert positions.not_committed(batch) is batch


def test_newest_position_is_found_out_of_order() -> None:
    batch = _messages([("a", "9-0"), ("a", "3-0"), ("b", "1-5"), ("b", "1-10"), ("a", "10-0")])
    assert _positions(_RedisLikeSource(), {}).newest(batch) == {"a": "10-0", "b": "1-10"}


def test_repeats_of_a_message_are_dropped_and_a_batch_without_them_is_untouched() -> None:
    batch = _messages([("a", "1-0"), ("b", "1-0"), ("a", "2-0")])
    assert first_of_each(batch).num_rows == 3
    repeated = _messages([("a", "1-0"), ("a", "2-0"), ("a", "1-0"), ("b", "1-0")])
    assert first_of_each(repeated).column("msg_id").to_pylist() == ["1-0", "2-0", "1-0"]
    assert first_of_each(repeated).column("partition").to_pylist() == ["a", "a", "b"]
