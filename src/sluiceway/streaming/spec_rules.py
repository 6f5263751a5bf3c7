"""What a `mode: stream` pipeline must be, and the columns a change source adds to it."""

from __future__ import annotations

from sluiceway.core.spec import ColumnContract, Pipeline
from sluiceway.errors import SpecProblem
from sluiceway.streaming.parse import CHANGE_FIELDS


def stream_problems(pipeline: Pipeline) -> list[SpecProblem]:
    """What keeps a pipeline from running as a stream (empty when it can)."""
    problems = []
    name = pipeline.primary_source
    config = pipeline.sources[name]
    if not getattr(config, "streaming", False):
        problems.append(
            SpecProblem(
                f"sources.{name}.type",
                f"mode: stream needs a streaming primary source (redis_streams, nats, kafka, postgres_cdc, mysql_cdc); "
                f"'{config.type}' is a batch source",
            )
        )
    elif config.contract is None:
        problems.append(
            SpecProblem(
                f"sources.{name}.contract",
                "a streaming source needs a contract: its columns name the JSON fields to read",
            )
        )
    for other, other_config in pipeline.sources.items():
        if other != name and getattr(other_config, "streaming", False):
            problems.append(
                SpecProblem(
                    f"sources.{other}.type",
                    f"a stream pipeline reads one streaming source ({name}); '{other}' is "
                    f"another ({other_config.type}), which no batch reads: run it as a "
                    "pipeline of its own (the sources after the first are lookups, read whole: "
                    "files, delta, postgres, ...)",
                )
            )
    if len(pipeline.sinks) != 1:
        problems.append(
            SpecProblem(
                "sinks",
                f"mode: stream writes one Delta sink (found {len(pipeline.sinks)}): the batch "
                "positions live in its commits, so a second sink could miss a batch after a "
                "crash; run a second pipeline that reads the table for other destinations",
            )
        )
    sink = pipeline.sinks[0]
    mode = "merge" if getattr(config, "change_capture", False) else "append"
    if sink.type != "delta" or getattr(sink, "mode", "append") != mode:
        problems.append(
            SpecProblem(
                "sinks[0]",
                f"mode: stream commits each batch to a Delta sink with mode: {mode}"
                + (" (merge_keys: the table's primary key)" if mode == "merge" else "")
                + f" (found type {sink.type}, mode {getattr(sink, 'mode', '-')})",
            )
        )
    return problems


def with_change_columns(pipeline: Pipeline, source: str) -> Pipeline:
    """`pipeline` with the change columns (op, order, unchanged) in `source`'s contract, so
    they pass the contract and reach the merge sink."""
    config = pipeline.sources[source]
    assert config.contract is not None, "stream_problems requires a contract"
    columns = {
        **config.contract.columns,
        **{name: ColumnContract(type=kind) for name, kind in CHANGE_FIELDS.items()},
    }
    contract = config.contract.model_copy(update={"columns": columns})
    sources = {**pipeline.sources, source: config.model_copy(update={"contract": contract})}
    return pipeline.model_copy(update={"sources": sources})
