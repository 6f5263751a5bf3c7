"""What a data subject looks like in stored data, and the scan that proves it is gone.

`SubjectForms` holds every form of the subject's value that may be stored: the raw value
and its deterministic masked forms. `scan_table` reads every file under a table's folder —
data files no longer in the table included, and the Delta log — and names each file that
still holds one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sluiceway import masking
from sluiceway.core.spec import Pipeline
from sluiceway.core.storage import arrow_filesystem, storage_errors
from sluiceway.engines.duckdb import quote_literal
from sluiceway.errors import ConfigError
from sluiceway.masking import decrypt_value

_STATS_KEYS = ("minValues", "maxValues", "partitionValues")
RAW_PAYLOAD = "raw_payload"  # dead letters: the original bytes, encrypted when there is PII
IDENTIFYING_METHODS = ("hash", "hmac", "email", "encrypt")


@dataclass(frozen=True, repr=False)
class SubjectForms:
    """The forms of one subject's value to look for. The repr never shows them.

    Attributes:
        column: the subject column.
        values: the raw value and every deterministic masked form of it.
        number: the raw value as a number when it is one (matched in numeric columns).
        encryption_key: decrypts encrypted raw payloads of dead letters.
    """

    column: str
    values: frozenset[str]
    number: float | None = None
    encryption_key: bytes | None = None

    def __repr__(self) -> str:
        return f"SubjectForms(column={self.column!r}, forms={len(self.values)})"

    def holds(self, value: Any, key: str | None = None) -> bool:
        """True when the scalar `value` (held under `key`) is one of the forms.

        A number is the subject only under the subject column: 123 in another column
        (an amount, a count) is someone else's data.
        """
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, int | float):
            return self.is_subject_column(key) and float(value) == self.number
        return str(value) in self.values

    def is_subject_column(self, name: str | None) -> bool:
        """True when `name` is the subject column (case-insensitively) and the value is a
        number (so numeric columns can hold it)."""
        return self.number is not None and (name or "").casefold() == self.column.casefold()

    def in_record(self, record: Any, key: str | None = None) -> bool:
        """True when a JSON record holds the subject: any text that is one of the forms, or
        the number under the subject column."""
        if isinstance(record, dict):
            return any(self.in_record(v, str(k)) for k, v in record.items())
        if isinstance(record, list):
            return any(self.in_record(v, key) for v in record)
        return self.holds(record, key)

    def in_raw_payload(self, raw: bytes | None) -> bool | None:
        """True/False when the (decrypted) raw payload holds the subject; None when it is
        encrypted and no key can open it.

        A payload that is not JSON (a malformed CSV line, a cut NDJSON line, a stream
        message) holds the subject when one of its forms stands in it as a whole token:
        `u42` in `u42,Ann,FR` or in `{"id": "u42", "na`, not in `u421`."""
        if raw is None:
            return False
        if any(value.encode() == raw for value in self.values):
            return True
        record = _json(raw)
        if record is not None:
            return self.in_record(record)
        plain: bytes | None = None
        if self.encryption_key is not None:
            try:
                plain = decrypt_value(raw, self.encryption_key)
            except Exception:
                plain = None
        if plain is not None:
            record = _json(plain)
            return self.in_record(record) if record is not None else self._in_text(plain)
        if _is_text(raw):
            return self._in_text(raw)
        return None

    def _in_text(self, data: bytes) -> bool:
        """A form stands as a whole field: between delimiters of CSV or JSON (`,;|` tab,
        quotes, brackets, spaces, `=`) or the ends of the text; a sentence's last word may
        end with a full stop. `7` is not in `2024/7/1` nor `u421` in `u4210`."""
        text = data.decode("utf-8", errors="replace")
        return any(
            re.search(rf"{_FIELD_START}{re.escape(value)}{_FIELD_END}", text)
            for value in self.values
        )


_FIELD_START = r"(?:^|(?<=[\s,;|\"'\[{(=]))"
_FIELD_END = r"(?=$|[\s,;|\"'\]})]|\.(?:\s|$))"


def _is_text(data: bytes) -> bool:
    """Plain text, not an AES-GCM token: valid UTF-8 without control characters other
    than tab, CR and LF."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(ch) < 32 and ch not in "\t\r\n" for ch in text)


def masked_forms(method: str, value: str, keys: masking.MaskKeys) -> list[str]:
    """The stored forms of `value` under `method`, computed with the runner's own SQL.

    Returns:
        The masked value (empty for methods that cannot identify a subject).

    Raises:
        ConfigError: the method's key is not set.
    """
    if method not in IDENTIFYING_METHODS:
        return []
    con = duckdb.connect()
    try:
        masking.register_functions(con, keys)
        row = con.execute(f"SELECT {masking.mask_sql(method, quote_literal(value), keys)}")
        masked = row.fetchone()
    finally:
        con.close()
    return [] if masked is None or masked[0] is None else [str(masked[0])]


def pipeline_forms(
    pipeline: Pipeline, column: str, value: str, keys: masking.MaskKeys
) -> tuple[list[str], str | None]:
    """The forms of the subject in `pipeline`'s tables, and a note on its masking.

    Raises:
        ConfigError: the column is masked with a keyed method whose key is not set.
    """
    method = {k.casefold(): m for k, m in pipeline.pii.items()}.get(column.casefold())
    if method is None:
        return [value], None
    try:
        forms = [value, *masked_forms(method, value, keys)]
    except ConfigError as exc:
        raise ConfigError(
            f"pipeline '{pipeline.pipeline}' masks '{column}' with {method}: forget needs the "
            f"key its runs used to find the masked rows.\n{exc.message}"
        ) from None
    if method in IDENTIFYING_METHODS:
        return forms, f"{pipeline.pipeline}: '{column}' is masked with {method}; matched masked"
    return forms, (
        f"{pipeline.pipeline}: '{column}' is masked with {method}, which cannot identify a "
        "subject; rows holding only its masked form cannot be found"
    )


@dataclass
class ScanResult:
    """Files read under a table's folder, and the ones that still hold the subject."""

    files: int = 0
    dirty: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def is_clean(self) -> bool:
        return not self.dirty and not self.unreadable


def scan_table(uri: str, options: dict[str, str], forms: SubjectForms) -> ScanResult:
    """Read every file under the table's folder and name those holding any form.

    Data files (parquet) are checked column by column (text, binary and numbers, nested
    ones too; JSON text and raw payloads by their values); Delta log files by every string
    and by the column statistics and partition values; any other file byte by byte.

    Raises:
        SinkError: the storage refused the listing or a read.
    """
    result = ScanResult()
    advice = "Check the path and storage_options (endpoint, region, credentials)."
    with storage_errors(f"Could not scan {uri}", options, advice=advice, context={"uri": uri}):
        filesystem, root = arrow_filesystem(uri, options)
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            result.files += 1
            relative = info.path[len(root) :].lstrip("/")
            verdict = _file_holds(filesystem, info.path, relative, forms)
            if verdict is None:
                result.unreadable.append(relative)
            elif verdict:
                result.dirty.append(relative)
    return result


def _file_holds(
    filesystem: pafs.FileSystem, path: str, relative: str, forms: SubjectForms
) -> bool | None:
    with filesystem.open_input_file(path) as handle:
        data = handle.read()
    is_log = relative.startswith("_delta_log/")
    if relative.endswith(".parquet"):
        table = pq.read_table(pa.BufferReader(data))
        return _table_holds(table, forms, is_log=is_log)
    if is_log:
        return _log_holds(data, forms)
    if relative.endswith(".json") and (record := _json(data)) is not None:
        return _log_record_holds(record, forms, in_stats=False)
    return any(value.encode() in data for value in forms.values)


def _table_holds(table: pa.Table, forms: SubjectForms, *, is_log: bool) -> bool | None:
    found: bool | None = False
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = column.combine_chunks()
        if name == RAW_PAYLOAD and pa.types.is_binary(array.type):
            verdict = _any(forms.in_raw_payload(raw) for raw in array.drop_null().to_pylist())
        else:
            verdict = _array_holds(array, forms, is_log=is_log, name=name)
        if verdict:
            return True
        if verdict is None:
            found = None
    return found


def _array_holds(
    array: pa.Array, forms: SubjectForms, *, is_log: bool, name: str | None = None
) -> bool | None:
    kind = array.type
    if pa.types.is_struct(kind):
        children = [(array.field(i), kind.field(i).name) for i in range(kind.num_fields)]
        return _any(_array_holds(c, forms, is_log=is_log, name=n) for c, n in children)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _array_holds(array.flatten(), forms, is_log=is_log, name=name)
    if pa.types.is_map(kind):
        keys, items = array.keys, array.items
        return _any(_array_holds(a, forms, is_log=is_log, name=name) for a in (keys, items))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _text_holds(array, forms)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return _binary_holds(array, forms)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return not is_log and forms.is_subject_column(name) and _numbers_hold(array, forms)
    return False


def _any(verdicts: Iterable[bool | None]) -> bool | None:
    found: bool | None = False
    for verdict in verdicts:
        if verdict:
            return True
        if verdict is None:
            found = None
    return found


def _text_holds(array: pa.Array, forms: SubjectForms) -> bool:
    if pc.any(pc.is_in(array, value_set=pa.array(sorted(forms.values)))).as_py():
        return True
    for text in pc.unique(array.drop_null()).to_pylist():
        if text[:1] in ("{", "[") and forms.in_record(_json(text.encode())):
            return True
        if any(f"'{value}'" in text for value in forms.values):
            return True
    return False


def _binary_holds(array: pa.Array, forms: SubjectForms) -> bool:
    needles = [value.encode() for value in forms.values]
    blobs = pc.unique(array.drop_null()).to_pylist()
    return any(needle in blob for blob in blobs for needle in needles)


def _numbers_hold(array: pa.Array, forms: SubjectForms) -> bool:
    if forms.number is None or len(array) == 0:
        return False
    return bool(pc.any(pc.equal(array.cast(pa.float64()), forms.number)).as_py())


def _log_holds(data: bytes, forms: SubjectForms) -> bool:
    for line in data.decode("utf-8", errors="replace").splitlines():
        record = _json(line.encode())
        if record is None:
            if any(value in line for value in forms.values):
                return True
        elif _log_record_holds(record, forms, in_stats=False):
            return True
    return False


def _log_record_holds(
    record: Any, forms: SubjectForms, *, in_stats: bool, key: str | None = None
) -> bool:
    """Every text of a JSON record; numbers only as statistics of the subject column."""
    if isinstance(record, dict):
        return any(
            _log_record_holds(v, forms, in_stats=in_stats or k in _STATS_KEYS, key=str(k))
            for k, v in record.items()
        )
    if isinstance(record, list):
        return any(_log_record_holds(v, forms, in_stats=in_stats, key=key) for v in record)
    if isinstance(record, str):
        nested = _json(record.encode()) if record[:1] == "{" else None
        if nested is not None:
            return _log_record_holds(nested, forms, in_stats=in_stats, key=key)
        return record in forms.values or any(f"'{v}'" in record for v in forms.values)
    return in_stats and forms.holds(record, key)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
