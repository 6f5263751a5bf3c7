"""Format detection and per-format readers for the `files` source.

Every reader turns one local file into a SELECT with the file's columns (as VARCHAR for
text formats) plus __sw_file and __sw_row, and reports records it could not parse as
parse rejects with their line and raw bytes. No per-row Python on the hot path: CSV and
NDJSON are parsed by DuckDB, rejects come from DuckDB's rejects tables.
"""

from __future__ import annotations

import csv
import gzip
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import zstandard

from sluiceway.core.context import PARSE_REJECT_SCHEMA, ROW_FILE, ROW_NUMBER, Shape
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import SourceError, StepError

Format = Literal["csv", "ndjson", "json", "parquet", "avro"]
Compression = Literal["none", "gzip", "zstd"]

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".avro": "avro",
}
_COMPRESSIONS: dict[str, Compression] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
}
_MAGIC: dict[bytes, Format] = {b"PAR1": "parquet", b"Obj\x01": "avro"}


@dataclass(frozen=True)
class CsvOptions:
    """How CSV text is split."""

    delimiter: str = ","
    header: bool = True
    quote: str = '"'
    escape: str = '"'


@dataclass
class FileRead:
    """One file read: its SELECT, how many records it had, and the ones that failed."""

    select_sql: str
    records: int
    rejects: list[dict[str, object]] = field(default_factory=list)
    typed: bool = False
    temp_tables: list[str] = field(default_factory=list)


def compression_of(path: str, declared: str) -> Compression:
    """The compression of a file: declared, else from its extension."""
    if declared != "auto":
        return declared  # type: ignore[return-value]
    return _COMPRESSIONS.get(Path(path).suffix.lower(), "none")


def format_of(path: str, declared: str, compression: Compression) -> Format:
    """The format of a file from `declared` or its extension, confirmed by its first bytes.

    Raises:
        SourceError: the content does not look like the format (a .csv that is JSON).
    """
    name = Path(path).name.lower()
    stem = name.rsplit(".", 1)[0] if compression != "none" and "." in name else name
    by_name = _EXTENSIONS.get(Path(stem).suffix)
    claimed: Format | None = None if declared == "auto" else declared  # type: ignore[assignment]
    claimed = claimed or by_name
    sniffed = sniff(head_bytes(path, compression))
    if claimed is None:
        if sniffed is None:
            raise SourceError(
                f"cannot tell the format of '{path}': its extension is not one of "
                f"{', '.join(sorted(_EXTENSIONS))}; set format: csv|ndjson|json|parquet|avro"
            )
        return sniffed
    if sniffed in ("json", "ndjson") and claimed in ("json", "ndjson"):
        return sniffed
    if sniffed is not None and not _compatible(claimed, sniffed):
        raise SourceError(
            f"'{path}' is said to be {claimed.upper()} but its content looks like {sniffed.upper()}; "
            f"fix the file, or set format: {sniffed} on the source"
        )
    if sniffed is None and claimed in ("parquet", "avro", "json"):
        raise SourceError(
            f"'{path}' is said to be {claimed.upper()} but its content does not look like it "
            f"(first bytes {head_bytes(path, compression)[:8]!r}); fix the file or its format"
        )
    return claimed


def _compatible(claimed: Format, sniffed: Format) -> bool:
    text_json = {"json", "ndjson"}
    return claimed == sniffed or (claimed in text_json and sniffed in text_json)


def head_bytes(path: str, compression: Compression, size: int = 4096) -> bytes:
    """The first bytes of a file, decompressed."""
    try:
        with _open(path, compression) as handle:
            return handle.read(size)
    except (OSError, zstandard.ZstdError, EOFError) as exc:
        raise SourceError(f"cannot read '{path}' as {compression}-compressed: {exc}") from exc


def _open(path: str, compression: Compression) -> io.BufferedIOBase:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # type: ignore[return-value]
    return open(path, "rb")


def sniff(head: bytes) -> Format | None:
    """Format from content: Parquet/Avro magic, JSON's first character, else CSV (None if empty)."""
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        return None
    if text[:1] == b"[":
        return "json"
    if text[:1] == b"{":
        return "ndjson"
    return "csv"


def read_csv(
    engine: DuckDBEngine,
    path: str,
    display: str,
    compression: Compression,
    opts: CsvOptions,
    shape: Shape | None = None,
) -> FileRead:
    """One CSV file; see `read_csv_files`."""
    return read_csv_files(engine, [(path, display)], compression, opts, shape)


def csv_header(
    path: str, compression: Compression, opts: CsvOptions, engine: DuckDBEngine
) -> list[str]:
    """The column names of a CSV file (sniffed; no row is read)."""
    return _sniffed_header(path, compression, opts, engine)[0]


def _sniffed_header(
    path: str, compression: Compression, opts: CsvOptions, engine: DuckDBEngine
) -> tuple[list[str], bool]:
    """The column names, and whether DuckDB's sniffer found them. A line it cannot make
    sense of (a stray or unterminated quote) can defeat the sniffer for the whole file;
    then the header line is split here, and the file is read with those columns, so the
    bad line becomes a dead letter instead of failing the run."""
    try:
        return engine.columns_of(
            f"SELECT * FROM read_csv({quote_literal(path)}, {_csv_options(opts, compression)}, ignore_errors=true)"
        ), True
    except StepError:
        names = _split_header(path, compression, opts)
        if not names:
            raise
        return names, False


def _split_header(path: str, compression: Compression, opts: CsvOptions) -> list[str]:
    """The column names from the first line of the file split as CSV: its fields, or with
    `header: false` DuckDB's names for that many columns (column0..., zero-padded). []
    when there is no line, a name repeats, or the quote or escape is not one character."""
    if len(opts.quote) != 1 or len(opts.escape) != 1 or len(opts.delimiter) != 1:
        return []
    head = head_bytes(path, compression, 1 << 20).removeprefix(b"\xef\xbb\xbf")
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    if not line.strip():
        return []
    reader = csv.reader(
        [line],
        delimiter=opts.delimiter,
        quotechar=opts.quote,
        doublequote=opts.escape == opts.quote,
        escapechar=None if opts.escape == opts.quote else opts.escape,
    )
    names = [name.strip() for name in next(reader, [])]
    if not opts.header:
        width = len(str(len(names) - 1))
        names = [f"column{index:0{width}d}" for index in range(len(names))]
    return names if names and len(set(names)) == len(names) else []


def read_csv_files(
    engine: DuckDBEngine,
    files: list[tuple[str, str]],
    compression: Compression,
    opts: CsvOptions,
    shape: Shape | None = None,
) -> FileRead:
    """CSV files with the same header, read by one scan; every column VARCHAR; malformed
    lines and invalid UTF-8 become rejects.

    Args:
        files: (local path, name shown in rows and dead letters) of each file, in order.
        shape: applied to the rows in the statement that parses them (e.g. the contract's
            flagging query), so the raw text rows are never stored.
    """
    try:
        return _read_csv_files(engine, files, compression, opts, shape)
    except StepError as exc:
        if "invalid state" not in exc.message and "sniffing" not in exc.message:
            raise
        if not any(_has_mixed_endings(path, compression) for path, _ in files):
            raise
    # Some lines end in CRLF and others in LF (files appended to by different tools): the
    # parser takes one line ending per file. Read copies with CRLF turned into LF.
    # A CRLF inside a quoted value is kept; when the quotes cannot be followed (a quote
    # inside a field, an escape character), every CRLF becomes LF instead.
    with tempfile.TemporaryDirectory(prefix="sluice-csv-") as folder:
        for quote in (opts.quote, None):
            copies = [
                (_with_lf_endings(path, compression, Path(folder) / f"{i}.csv", quote), shown)
                for i, (path, shown) in enumerate(files)
            ]
            try:
                return _read_csv_files(engine, copies, "none", opts, shape)
            except StepError:
                if quote is None:
                    raise
    raise AssertionError("the last attempt returns or raises")


def _has_mixed_endings(path: str, compression: Compression) -> bool:
    crlf = lf = 0
    tail = b""
    with _open(path, compression) as handle:
        while chunk := handle.read(8 << 20):
            data = tail + chunk
            crlf += data.count(b"\r\n") - tail.count(b"\r\n")
            lf += chunk.count(b"\n")
            tail = data[-1:]
    return 0 < crlf < lf


def _with_lf_endings(path: str, compression: Compression, target: Path, quote: str | None) -> str:
    """A copy of the file with every CRLF that ends a line as LF (line numbers do not
    change); with `quote`, one inside a quoted value is part of the value and stays."""
    mark = (quote or "").encode()[:1] or b"\x00"
    inside = False
    with _open(path, compression) as handle, open(target, "wb") as out:
        carry = b""
        while chunk := handle.read(8 << 20):
            data = carry + chunk
            carry = b"\r" if data.endswith(b"\r") else b""
            body = data[: len(data) - len(carry)]
            parts = body.split(mark) if quote else [body]
            for index, part in enumerate(parts):
                if index:
                    out.write(mark)
                    inside = not inside
                out.write(part if inside else part.replace(b"\r\n", b"\n"))
        out.write(carry)
    return str(target)


def _read_csv_files(
    engine: DuckDBEngine,
    files: list[tuple[str, str]],
    compression: Compression,
    opts: CsvOptions,
    shape: Shape | None,
) -> FileRead:
    header, sniffed = _sniffed_header(files[0][0], compression, opts, engine)
    try:
        return _read_csv_batch(engine, files, compression, opts, shape, header, not sniffed)
    except StepError as exc:
        if not sniffed or "sniffing" not in exc.message:
            raise
        # Another file of the batch defeats the sniffer: read them all with the first's
        # columns (the files of a batch share their header).
        names = _split_header(files[0][0], compression, opts)
        if not names:
            raise
        return _read_csv_batch(engine, files, compression, opts, shape, names, True)


def _read_csv_batch(
    engine: DuckDBEngine,
    files: list[tuple[str, str]],
    compression: Compression,
    opts: CsvOptions,
    shape: Shape | None,
    header: list[str],
    explicit: bool,
) -> FileRead:
    """One scan of `files`; `explicit`: with `header`'s columns, the sniffer left out."""
    rejects, scans = engine.new_name("rejects"), engine.new_name("scans")
    paths = "[" + ", ".join(quote_literal(path) for path, _ in files) + "]"
    options = _csv_options(opts, compression)
    if explicit:
        types = ", ".join(f"{quote_literal(name)}: 'VARCHAR'" for name in header)
        options += f", auto_detect=false, columns={{{types}}}"
    reader = (
        f"read_csv({paths}, {options}, filename={quote_literal(ROW_FILE)}, "
        f"store_rejects=true, rejects_table={quote_literal(rejects)}, rejects_scan={quote_literal(scans)})"
    )
    table = engine.new_name("csv")
    columns = [*header, ROW_FILE]
    select = f"SELECT * FROM {reader}" if shape is None else shape(reader, columns)
    names = ", ".join(display for _, display in files)
    try:
        engine.create_table(table, select, purpose=f"read CSV {names}"[:200])
        rejects_out = _csv_rejects(engine, rejects, scans, files, compression)
    finally:
        engine.run(f"DROP TABLE IF EXISTS {quote_ident(rejects)}")
        engine.run(f"DROP TABLE IF EXISTS {quote_ident(scans)}")
    records = engine.count(table) + len(rejects_out)
    return FileRead(
        _numbered_files(engine, table, files), records, rejects_out, temp_tables=[table]
    )


def _csv_options(opts: CsvOptions, compression: Compression) -> str:
    return (
        f"all_varchar=true, header={str(opts.header).lower()}, "
        f"delim={quote_literal(opts.delimiter)}, quote={quote_literal(opts.quote)}, "
        f"escape={quote_literal(opts.escape)}, compression={quote_literal(_duck_compression(compression))}, "
        f"strict_mode=true, null_padding=false"
    )


def _csv_rejects(
    engine: DuckDBEngine,
    rejects: str,
    scans: str,
    files: list[tuple[str, str]],
    compression: Compression,
) -> list[dict[str, object]]:
    errors = engine.execute(
        f"SELECT s.file_path, r.line, min(r.line_byte_position), first(r.csv_line), "
        f"string_agg(DISTINCT r.error_message, '; ') FROM {quote_ident(rejects)} r "
        f"JOIN {quote_ident(scans)} s USING (scan_id, file_id) GROUP BY s.file_path, r.line "
        f"ORDER BY s.file_path, r.line",
        purpose="collect rejects",
    ).fetchall()
    display = dict(files)
    out: list[dict[str, object]] = []
    for path, _ in files:
        mine = [e for e in errors if e[0] == path]
        raw_lines = _raw_lines(path, compression, [int(e[2]) for e in mine])
        out += [
            _csv_reject(display[path], int(line), raw_lines.get(int(pos)), text or "", message)
            for _, line, pos, text, message in mine
        ]
    return out


_REJECT_TEXT_LIMIT = 9_999
"""DuckDB keeps at most this many bytes (and one more) of a rejected line's text."""


def _csv_reject(
    file: str, line: int, raw: bytes | None, text: str, message: str
) -> dict[str, object]:
    """A malformed line as a dead letter; one that spans several lines (a quoted newline)
    holds all of them.

    Raises:
        SourceError: a quote that never closes: the rest of the file cannot be read.
    """
    spanned = text.strip("\r\n").count("\n") + 1
    if spanned > 1 and ("unterminated quote" in message or len(text) >= _REJECT_TEXT_LIMIT):
        # The reader took everything after the quote as one value, and keeps only the
        # first 10,000 bytes of it: the lines after are in neither the table nor here.
        raise SourceError(
            f"cannot read '{file}' as CSV: line {line} opens a quote that never closes, so "
            "the reader takes the rest of the file as one value and its rows cannot be told "
            "apart. Fix the quote (or remove the line) and run again; nothing was written",
            context={"file": file, "line": line},
        )
    if spanned > 1:
        return {
            "file": file,
            "line": line,
            "raw": text.encode(),
            "reason": f"malformed CSV line: {message} The quote runs over {spanned} lines "
            f"(lines {line}-{line + spanned - 1} of the file are in this dead letter); fix the "
            "quote and run the file again",
        }
    return {
        "file": file,
        "line": line,
        "raw": raw if raw is not None else text.encode(),
        "reason": f"malformed CSV line: {message}",
    }


def _numbered_files(engine: DuckDBEngine, table: str, files: list[tuple[str, str]]) -> str:
    """Rows of files loaded in order into one table, with the file's name and their 1-based
    number in it.

    DuckDB keeps insertion order, so rowid follows the files; a row's number is its rowid
    minus the first rowid of its file (a window function would number the same rows but
    forces the read onto one thread).
    """
    firsts = dict(
        engine.execute(
            f"SELECT {ROW_FILE}, min(rowid) FROM {quote_ident(table)} GROUP BY {ROW_FILE}",
            purpose="number rows per file",
        ).fetchall()
    )
    offset = (
        "CASE "
        + " ".join(
            f"WHEN {ROW_FILE} = {quote_literal(path)} THEN {int(firsts.get(path, 0))}"
            for path, _ in files
        )
        + " END"
    )
    renamed = (
        "CASE "
        + " ".join(
            f"WHEN {ROW_FILE} = {quote_literal(path)} THEN {quote_literal(display)}"
            for path, display in files
        )
        + " END"
    )
    if len(files) == 1:
        offset, renamed = str(int(firsts.get(files[0][0], 0))), quote_literal(files[0][1])
    return (
        f"SELECT * REPLACE ({renamed} AS {ROW_FILE}), rowid + 1 - {offset} AS {ROW_NUMBER} "
        f"FROM {quote_ident(table)}"
    )


def _numbered(table: str, display: str) -> str:
    """Rows of a table loaded in file order, with the file and their 1-based number.

    DuckDB keeps insertion order, so rowid follows the file; a window function would
    number the same rows but forces the read onto one thread.
    """
    return (
        f"SELECT *, {quote_literal(display)} AS {ROW_FILE}, rowid + 1 AS {ROW_NUMBER} "
        f"FROM {quote_ident(table)}"
    )


def _duck_compression(compression: Compression) -> str:
    return {"none": "none", "gzip": "gzip", "zstd": "zstd"}[compression]


def _raw_lines(path: str, compression: Compression, positions: list[int]) -> dict[int, bytes]:
    """The exact bytes of the lines starting at `positions` (bad lines only: few)."""
    if not positions:
        return {}
    out: dict[int, bytes] = {}
    with _open(path, compression) as handle:
        data = handle.read()
    for pos in positions:
        # DuckDB's line_byte_position is one byte past the line start after a bare LF.
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", start)
        out[pos] = data[start : end if end >= 0 else len(data)].rstrip(b"\r")
    return out


def read_ndjson(
    engine: DuckDBEngine, path: str, display: str, compression: Compression
) -> FileRead:
    """Newline-delimited JSON objects; each key becomes a VARCHAR column."""
    rejects, scans, lines = (
        engine.new_name("rejects"),
        engine.new_name("scans"),
        engine.new_name("lines"),
    )
    engine.create_table(
        lines,
        f"SELECT line, row_number() OVER () AS {ROW_NUMBER} FROM read_csv({quote_literal(path)}, "
        f"columns={{'line': 'VARCHAR'}}, header=false, delim=chr(1), quote='', escape='', "
        f"compression={quote_literal(_duck_compression(compression))}, store_rejects=true, "
        f"rejects_table={quote_literal(rejects)}, rejects_scan={quote_literal(scans)})",
        purpose=f"read NDJSON {display}",
    )
    encoding = engine.execute(
        f"SELECT line, min(line_byte_position), string_agg(DISTINCT error_message, '; ') "
        f"FROM {quote_ident(rejects)} GROUP BY line ORDER BY line",
        purpose="rejects",
    ).fetchall()
    raw_lines = _raw_lines(path, compression, [int(e[1]) for e in encoding])
    rejects_out = [
        {
            "file": display,
            "line": int(line),
            "raw": raw_lines.get(int(pos), b""),
            "reason": f"unreadable line: {msg}",
        }
        for line, pos, msg in encoding
    ]
    if encoding:
        renumber = _line_numbers([int(e[0]) for e in encoding])
        engine.run(f"UPDATE {quote_ident(lines)} SET {ROW_NUMBER} = {renumber}")
    engine.run(f"DROP TABLE IF EXISTS {quote_ident(rejects)}")
    engine.run(f"DROP TABLE IF EXISTS {quote_ident(scans)}")
    read = _json_objects(engine, lines, display, rejects_out)
    read.temp_tables.append(lines)
    return read


def _line_numbers(dropped: list[int]) -> str:
    """SQL turning the ordinal of a kept line into its line number, given the dropped lines."""
    # The k-th kept line comes after the j-th dropped line (line r) when k > r - j.
    shifts = " + ".join(
        f"({ROW_NUMBER} > {line - j})::BIGINT" for j, line in enumerate(sorted(dropped), 1)
    )
    return f"{ROW_NUMBER} + {shifts}"


def read_json_array(
    engine: DuckDBEngine, path: str, display: str, compression: Compression
) -> FileRead:
    """A JSON document holding an array of objects; a file that is not valid JSON is one reject."""
    with _open(path, compression) as handle:
        data = handle.read()
    lines = engine.new_name("lines")
    engine.register_arrow("__json_doc", pa.table({"doc": [data.decode("utf-8", errors="replace")]}))
    valid = engine.fetch_one(
        "SELECT CASE WHEN json_valid(doc) THEN json_type(doc::JSON) = 'ARRAY' ELSE false END "
        "FROM __json_doc"
    )[0]
    found: list[dict[str, object]] = []
    if valid:
        engine.create_table(
            lines,
            f"SELECT e::VARCHAR AS line, row_number() OVER () AS {ROW_NUMBER} "
            f"FROM (SELECT unnest(json_extract(doc::JSON, '$[*]')) AS e FROM __json_doc)",
            purpose=f"read JSON {display}",
        )
    else:
        reason = "not a valid JSON array of objects"
        found = [{"file": display, "line": 1, "raw": data, "reason": reason}]
        engine.create_table(
            lines, f"SELECT NULL::VARCHAR AS line, NULL::BIGINT AS {ROW_NUMBER} WHERE false"
        )
    read = _json_objects(engine, lines, display, found)
    read.temp_tables += [lines, "__json_doc"]
    return read


def _json_objects(
    engine: DuckDBEngine, lines: str, display: str, rejects: list[dict[str, object]]
) -> FileRead:
    checked = engine.new_name("json")
    engine.create_table(
        checked,
        f"SELECT line, {ROW_NUMBER}, CASE WHEN json_valid(line) THEN json_type(line::JSON) END AS kind "
        f"FROM {quote_ident(lines)} WHERE line IS NOT NULL AND trim(line) <> ''",
    )
    bad = engine.execute(
        f"SELECT {ROW_NUMBER}, line, kind FROM {quote_ident(checked)} WHERE kind IS DISTINCT FROM 'OBJECT'"
    ).fetchall()
    rejects = rejects + [
        {
            "file": display,
            "line": int(n),
            "raw": (line or "").encode(),
            "reason": "malformed JSON (truncated or invalid)"
            if kind is None
            else f"a JSON {kind.lower()}, not an object",
        }
        for n, line, kind in bad
    ]
    keys = [
        r[0]
        for r in engine.execute(
            f"SELECT DISTINCT unnest(json_keys(line)) AS k FROM {quote_ident(checked)} WHERE kind = 'OBJECT' ORDER BY k"
        ).fetchall()
    ]
    # Keys that differ only in case are one column, as SQL resolves names (two would else
    # be `Email` and `email_1`, the second beside the contract's column, unchecked); keys
    # that cannot be a column (empty, a reserved `__sw_` name) are left out.
    spellings: dict[str, list[str]] = {}
    for key in keys:
        if key and not key.lower().startswith("__sw_"):
            spellings.setdefault(key.casefold(), []).append(key)
    columns = ", ".join(
        _coalesced([f"json_extract_string(line, {quote_literal('$.' + _json_key(k))})" for k in ks])
        + f" AS {quote_ident(ks[0])}"
        for ks in spellings.values()
    )
    select = (
        f"SELECT {columns + ', ' if columns else ''}{quote_literal(display)} AS {ROW_FILE}, {ROW_NUMBER} "
        f"FROM {quote_ident(checked)} WHERE kind = 'OBJECT'"
    )
    objects = engine.create_table(
        engine.new_name("objects"), select, purpose=f"extract JSON fields of {display}"
    )
    engine.run(f"DROP TABLE IF EXISTS {quote_ident(checked)}")
    valid = engine.count(objects)
    return FileRead(
        f"SELECT * FROM {quote_ident(objects)}",
        valid + len(rejects),
        rejects,
        temp_tables=[objects],
    )


def _coalesced(values: list[str]) -> str:
    return values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"


def _json_key(key: str) -> str:
    return '"' + key.replace('"', '\\"') + '"'


def read_parquet(
    engine: DuckDBEngine, path: str, display: str, compression: Compression
) -> FileRead:
    """A Parquet file with its own types."""
    table = engine.new_name("parquet")
    engine.create_table(
        table,
        f"SELECT * FROM read_parquet({quote_literal(path)})",
        purpose=f"read Parquet {display}",
    )
    return FileRead(_numbered(table, display), engine.count(table), typed=True, temp_tables=[table])


def read_avro(engine: DuckDBEngine, path: str, display: str, compression: Compression) -> FileRead:
    """An Avro container file; a corrupt file is one reject holding its bytes."""
    import fastavro

    with _open(path, compression) as handle:
        data = handle.read()
    try:
        records = list(fastavro.reader(io.BytesIO(data)))
    except Exception as exc:
        reason = f"corrupt Avro file: {exc}"
        reject: dict[str, object] = {"file": display, "line": None, "raw": data, "reason": reason}
        empty = engine.new_name("avro")
        engine.create_table(
            empty,
            f"SELECT {quote_literal(display)} AS {ROW_FILE}, 1::BIGINT AS {ROW_NUMBER} WHERE false",
        )
        select = f"SELECT * FROM {quote_ident(empty)}"
        return FileRead(select, 1, [reject], typed=True, temp_tables=[empty])
    table = pa.Table.from_pylist(records) if records else pa.table({})
    table = table.append_column(ROW_FILE, pa.array([display] * len(table), pa.string()))
    table = table.append_column(ROW_NUMBER, pa.array(range(1, len(table) + 1), pa.int64()))
    name = engine.register_arrow(engine.new_name("avro"), table)
    return FileRead(
        f"SELECT * FROM {quote_ident(name)}", len(table), typed=True, temp_tables=[name]
    )


Reader = Callable[[DuckDBEngine, str, str, Compression], FileRead]
READERS: dict[Format, Reader] = {
    "ndjson": read_ndjson,
    "json": read_json_array,
    "parquet": read_parquet,
    "avro": read_avro,
}


def rejects_table(rejects: list[dict[str, object]]) -> pa.Table:
    """Parse rejects as an Arrow table of PARSE_REJECT_SCHEMA."""
    return pa.Table.from_pylist(rejects, schema=PARSE_REJECT_SCHEMA)
