"""Table checks without a pipeline: `sluice check-data CHECKS.yaml --data PATH`.

The YAML file is a whole pipeline spec (its `checks:` are used; without `--data` its primary
source is read) or a checks file, `{version: 1, checks: [...]}`, validated like a spec.

The data is listed, fetched and sniffed by the `files` source, then read *typed* so that
numeric checks compare numbers: Parquet and Avro keep their own types, CSV and JSON get
DuckDB's type inference (`read_csv` / `read_json` with auto-detection) instead of the
all-text read a pipeline types by its contract.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import yaml

from sluiceway.checks.table import CheckEnv, CheckResult, evaluate_checks, sample_unexpected
from sluiceway.core.context import META_COLUMNS, RunContext
from sluiceway.core.events import EventBus
from sluiceway.core.loader import load_checks, load_spec
from sluiceway.core.spec import CheckConfig, Pipeline
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import SluicewayError, SourceError, SpecError, SpecProblem
from sluiceway.sources import file_formats as ff
from sluiceway.sources.files import FilesSource, FilesSourceConfig

__all__ = ["check_data", "check_data_report"]

_PIPELINE_KEYS = {"pipeline", "sources", "sinks"}
_TABLE = "data"


def check_data(checks_file: Path, data: str | None, *, base_dir: Path) -> list[CheckResult]:
    """The results of `check_data_report` (see there)."""
    return check_data_report(checks_file, data, base_dir=base_dir)[0]


def check_data_report(
    checks_file: Path, data: str | None, *, base_dir: Path
) -> tuple[list[CheckResult], list[list[str]]]:
    """Evaluate the checks of `checks_file` on `data`, outside any pipeline; with a few
    unexpected values of each failed column check (none of a column the spec's `pii:`
    names: the data here is not masked).

    Args:
        checks_file: a pipeline spec or a checks file `{version: 1, checks: [...]}`.
        data: a file, folder, glob (local or s3://) of CSV, JSON, NDJSON, Parquet or Avro;
            None: the primary source of the pipeline spec.
        base_dir: a relative `data` path resolves against it.

    Returns:
        One result per check, in order (see `evaluate_checks`), and the samples of each.

    Raises:
        SpecError: the YAML file is not a valid spec or checks file, or holds no check.
        SourceError: the data cannot be found or read, or no data is named.
    """
    checks, config, resolve_dir, pii = _checks_and_source(checks_file, data, base_dir)
    engine = DuckDBEngine(redact_values=True)
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-check-data-") as cache:
            ctx = _context(engine, config, resolve_dir, Path(cache))
            table, rejects = _read_with_rejects(ctx, FilesSource(config))
            env = CheckEnv(
                logical_date=datetime.now(UTC).date(), base_dir=checks_file.resolve().parent
            )
            results = evaluate_checks(engine, table, checks, env)
            shown = [
                [] if _reads_any(c, pii) else sample
                for c, sample in zip(
                    checks, sample_unexpected(engine, table, checks, results, env), strict=True
                )
            ]
            unparsed = _unparsed_lines(engine, rejects)
            if unparsed:
                return [*results, _parse_result(unparsed, engine.count(table))], [*shown, []]
            return results, shown
    finally:
        engine.close()


def _reads_any(check: CheckConfig, columns: set[str]) -> bool:
    """Whether `check` names one of `columns` anywhere in its settings (`column`, `keys`,
    `column_list`, `column_A`...): its samples would show that column's values."""

    def names(value: object) -> set[str]:
        if isinstance(value, str):
            return {value}
        if isinstance(value, (list, tuple)):
            return {v for v in value if isinstance(v, str)}
        return set()

    return any(names(value) & columns for value in check.model_dump().values())


def _checks_and_source(
    checks_file: Path, data: str | None, base_dir: Path
) -> tuple[list[CheckConfig], FilesSourceConfig, Path, set[str]]:
    """The checks, the files to read, the folder their relative paths resolve against, and
    the PII columns (a spec's `pii:`)."""
    if not checks_file.is_file():
        raise SourceError(
            f"{checks_file}: no such file; give the path of a pipeline spec or a checks file"
        )
    if not _is_pipeline_spec(checks_file):
        if data is None:
            raise SourceError(
                f"{checks_file} is a checks file and names no data: pass --data PATH "
                "(a file, folder or glob; local or s3://)"
            )
        return load_checks(checks_file), FilesSourceConfig(path=data), base_dir, set()
    pipeline = load_spec(checks_file)
    pii = set(pipeline.pii)
    if not pipeline.checks:
        problem = SpecProblem("checks", "the pipeline has no checks: to run")
        raise SpecError([problem], source=str(checks_file))
    primary = pipeline.sources[pipeline.primary_source]
    if data is not None:
        update = {"path": data, "format": "auto", "incremental": False}
        config = (
            primary.model_copy(update=update)
            if isinstance(primary, FilesSourceConfig)
            else FilesSourceConfig(path=data)
        )
        return list(pipeline.checks), config, base_dir, pii
    if not isinstance(primary, FilesSourceConfig):
        raise SourceError(
            f"the primary source '{pipeline.primary_source}' is of type '{primary.type}'; "
            "check-data reads files: pass --data PATH"
        )
    return list(pipeline.checks), primary, checks_file.resolve().parent, pii


def _is_pipeline_spec(path: Path) -> bool:
    """True when the YAML mapping has pipeline keys; anything unreadable is left to the loader."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and bool(_PIPELINE_KEYS & set(data))


def _context(
    engine: DuckDBEngine, config: FilesSourceConfig, base_dir: Path, cache: Path
) -> RunContext:
    # The files source needs a run's context only to resolve paths and cache remote files.
    pipeline = Pipeline.model_construct(
        version=1, pipeline="check-data", sources={_TABLE: config}, sinks=[]
    )
    return RunContext(
        pipeline=pipeline,
        run_id="check-data",
        logical_date=date.today(),
        engine=engine,
        base_dir=base_dir,
        state_dir=cache,
        events=EventBus("check-data", "check-data"),
    )


def _read_typed(ctx: RunContext, source: FilesSource) -> str:
    """Every file of the source in one table `data`, typed; returns the table name (CSV
    lines that cannot be parsed are left out)."""
    return _read_with_rejects(ctx, source)[0]


def _read_with_rejects(ctx: RunContext, source: FilesSource) -> tuple[str, list[str]]:
    """Every file of the source in one table `data`, typed: the table's name, and the names
    of the tables where CSV lines that could not be parsed are recorded."""
    try:
        selects, rejects = _typed_selects(ctx, source)
        union = " UNION ALL BY NAME ".join(f"({select})" for select in selects)
        return ctx.engine.create_table(_TABLE, union, purpose="read the data"), rejects
    except SourceError:
        raise
    except SluicewayError as exc:
        raise SourceError(f"cannot read the data: {_first_line(exc.message)}") from exc
    except Exception as exc:
        raise SourceError(f"cannot read the data: {_first_line(str(exc))}") from exc


def _typed_selects(ctx: RunContext, source: FilesSource) -> tuple[list[str], list[str]]:
    """One SELECT per group of text files of one format and compression, one per other file;
    and the rejects tables of the CSV groups (a malformed line is recorded, not fatal)."""
    config = source.config
    text_groups: dict[tuple[ff.Format, ff.Compression], list[str]] = {}
    selects = []
    for uri in source.list_files(ctx):
        local = source.localize(ctx, uri)
        compression = ff.compression_of(uri, config.compression)
        fmt = ff.format_of(local, config.format, compression)
        if fmt in _TEXT_READERS or fmt == "csv":
            text_groups.setdefault((fmt, compression), []).append(local)
        else:
            selects.append(_binary_select(ctx.engine, fmt, local, uri, compression))
    rejects = []
    for (fmt, compression), paths in text_groups.items():
        if fmt != "csv":
            selects.append(_TEXT_READERS[fmt](paths, config, compression))
            continue
        for path in paths:  # one read per file: DuckDB keeps no rejects with union_by_name
            rejects.append(ctx.engine.new_name("unparsed"))
            selects.append(_csv_select(path, config, compression, rejects[-1]))
    return selects, rejects


def _binary_select(
    engine: DuckDBEngine, fmt: ff.Format, local: str, uri: str, compression: ff.Compression
) -> str:
    read = ff.READERS[fmt](engine, local, uri, compression)
    if read.rejects:
        raise SourceError(f"cannot read '{uri}': {read.rejects[0]['reason']}")
    meta = ", ".join(quote_ident(column) for column in META_COLUMNS)
    return f"SELECT * EXCLUDE ({meta}) FROM ({read.select_sql})"


def _csv_select(
    path: str, config: FilesSourceConfig, compression: ff.Compression, rejects: str
) -> str:
    return (
        f"SELECT * FROM read_csv({quote_literal(path)}, auto_detect=true, "
        f"header={str(config.header).lower()}, delim={quote_literal(config.delimiter)}, "
        f"quote={quote_literal(config.quote)}, escape={quote_literal(config.escape)}, "
        f"compression={quote_literal(compression)}, store_rejects=true, "
        f"rejects_table={quote_literal(rejects)}, rejects_scan={quote_literal(rejects + '_scans')})"
    )


def _unparsed_lines(engine: DuckDBEngine, rejects: list[str]) -> list[tuple[str, int]]:
    """(file, line) of every CSV line that could not be parsed, in order."""
    found: list[tuple[str, int]] = []
    for name in rejects:
        found += engine.execute(
            f"SELECT DISTINCT s.file_path, r.line FROM {quote_ident(name)} r "
            f"JOIN {quote_ident(name + '_scans')} s USING (scan_id, file_id) ORDER BY 1, 2",
            purpose="collect the lines that could not be parsed",
        ).fetchall()
    return found


def _parse_result(unparsed: list[tuple[str, int]], rows: int) -> CheckResult:
    """A failed check that counts the lines that could not be parsed (so not checked)."""
    where = ", ".join(f"{Path(file).name}:{line}" for file, line in unparsed[:5])
    more = f" and {len(unparsed) - 5:,} more" if len(unparsed) > 5 else ""
    return CheckResult(
        check_id="parse",
        name="every line parses",
        check="parseable",
        column=None,
        severity="error",
        success=False,
        observed_value=len(unparsed),
        unexpected_count=len(unparsed),
        unexpected_percent=round(100 * len(unparsed) / (rows + len(unparsed)), 4),
        rows_checked=rows + len(unparsed),
        message=f"{len(unparsed):,} line(s) could not be parsed and were not checked: "
        f"{where}{more}",
    )


def _json_select(layout: str) -> Callable[[list[str], FilesSourceConfig, ff.Compression], str]:
    def select(paths: list[str], config: FilesSourceConfig, compression: ff.Compression) -> str:
        return (
            f"SELECT * FROM read_json({_list(paths)}, format={quote_literal(layout)}, "
            f"union_by_name=true, compression={quote_literal(compression)})"
        )

    return select


_TEXT_READERS: dict[ff.Format, Callable[[list[str], FilesSourceConfig, ff.Compression], str]] = {
    "ndjson": _json_select("newline_delimited"),
    "json": _json_select("array"),
}


def _list(paths: list[str]) -> str:
    return "[" + ", ".join(quote_literal(path) for path in paths) + "]"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
