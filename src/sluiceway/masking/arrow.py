"""Applying a per-string Python function to an Arrow array, once per distinct value."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc


def map_distinct(
    values: pa.Array | pa.ChunkedArray, function: Callable[[str], str | None]
) -> pa.Array:
    """Return a string array of `function(value)` for each value; nulls stay null.

    `function` runs once per distinct value, so repeated values (IPs, ids) cost one call.
    """
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    distinct = pc.unique(array)
    mapped = pa.array(
        [None if value is None else function(value) for value in distinct.to_pylist()],
        type=pa.string(),
    )
    return pc.take(mapped, pc.index_in(array, value_set=distinct))
