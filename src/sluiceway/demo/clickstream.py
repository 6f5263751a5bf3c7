"""A deterministic clickstream sample whose defects are counted exactly.

Every field of an event is a pure function of ``(seed, event index)``, drawn from a
counter-based hash rather than a sequential random stream. Any event can therefore be
rendered again anywhere (that is how exact duplicates land later in the stream), and the
chunking that keeps memory bounded never changes a byte of the output. Each event carries
at most one defect, so the counts in :class:`DefectCounts` are exact and disjoint.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from enum import IntEnum
from functools import lru_cache
from io import BufferedIOBase
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Compression = Literal["none", "gzip"]

EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "session_id",
    "event_type",
    "timestamp",
    "product_id",
    "product_price",
    "email",
    "ip_address",
    "user_agent",
    "page_url",
)
EVENT_TYPES = ("page_view", "add_to_cart", "search", "purchase")
EVENT_TYPE_WEIGHTS = (0.60, 0.20, 0.15, 0.05)
UNKNOWN_EVENT_TYPES = ("page_veiw", "clickk", "add_to_kart", "PageView")
BAD_EMAILS = ("not-an-email", "user@", "@example.com", "user.example.com", "n/a")
PRODUCT_COUNT = 1_000
MAX_DEFECT_RATE = 0.1

_SEARCH = EVENT_TYPES.index("search")
_PAGE_VIEW = EVENT_TYPES.index("page_view")
_CHUNK_ROWS = 200_000
_EVENTS_PER_USER = 20
_USER_SKEW = 1.3
_PRODUCT_SKEW = 2.0
_SESSION_MS = 30 * 60 * 1000
_DAY_MS = 24 * 60 * 60 * 1000
_IPV6_SHARE = 0.05
_GZIP_LEVEL = 6
_MIN_ROWS_FOR_BROKEN_LINES = 100
_INVALID_UTF8 = b"#\xff\xfe"

_DOMAINS = ("example.com", "example.org", "mail.example.net", "shop.example.co.uk")
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "curl/8.5.0",
)
_SEARCH_TERMS = ("running+shoes", "laptop", "coffee+grinder", "wireless+headphones", "yoga+mat")
_URL_PREFIXES = (
    "https://shop.example.com/products/",
    "https://shop.example.com/cart?add=",
    "https://shop.example.com/search?q=",
    "https://shop.example.com/checkout/complete?item=",
)
_CATEGORIES = ("electronics", "books", "home", "garden", "toys", "sports", "beauty", "grocery")
_TRUNCATED_PRODUCT_LINE = '{"product_id": "p0999", "categ'
_NEGATIVE_PRODUCT = {"product_id": "p1001", "category": "toys", "list_price": -19.99}


@dataclass(frozen=True)
class DefectCounts:
    """Exact number of records carrying each defect; every record carries at most one."""

    duplicates: int
    null_user_id: int
    unknown_event_type: int
    negative_price: int
    malformed_timestamp: int
    bad_email: int
    malformed_lines: int
    invalid_utf8_lines: int


@dataclass(frozen=True)
class GeneratedSample:
    """What :func:`generate_clickstream` wrote.

    ``rows`` counts every data line after the headers (duplicates and broken lines included).
    ``products_defects`` is the number of defective catalog lines (0 without a catalog).
    """

    files: tuple[Path, ...]
    rows: int
    defects: DefectCounts
    products_file: Path | None
    products_defects: int = 2


class _Kind(IntEnum):
    CLEAN = 0
    NULL_USER_ID = 1
    UNKNOWN_EVENT_TYPE = 2
    NEGATIVE_PRICE = 3
    MALFORMED_TIMESTAMP = 4
    BAD_EMAIL = 5
    MALFORMED_LINE = 6
    INVALID_UTF8 = 7


_KIND_COUNTS = {
    _Kind.NULL_USER_ID: "null_user_id",
    _Kind.UNKNOWN_EVENT_TYPE: "unknown_event_type",
    _Kind.NEGATIVE_PRICE: "negative_price",
    _Kind.MALFORMED_TIMESTAMP: "malformed_timestamp",
    _Kind.BAD_EMAIL: "bad_email",
    _Kind.MALFORMED_LINE: "malformed_lines",
    _Kind.INVALID_UTF8: "invalid_utf8_lines",
}


class _Stream(IntEnum):
    USER = 1
    EVENT_TYPE = 2
    TIME = 3
    PRODUCT = 4
    SESSION = 5
    DOMAIN = 6
    IPV4 = 7
    IPV6 = 8
    IP_VERSION = 9
    USER_AGENT = 10
    SEARCH_TERM = 11
    DEFECT_VALUE = 12
    PRICE = 13
    CATEGORY = 14


@dataclass(frozen=True, eq=False)
class _Users:
    ids: pa.Array
    emails: pa.Array
    ip_addresses: pa.Array
    user_agents: pa.Array


@dataclass(frozen=True, eq=False)
class _Catalog:
    ids: pa.Array
    prices: pa.Array
    cents: np.ndarray
    categories: pa.Array


@dataclass(frozen=True, eq=False)
class _Plan:
    seed: int
    day: date
    kinds: np.ndarray
    order: np.ndarray
    users: _Users
    catalog: _Catalog


def generate_clickstream(
    out_dir: Path,
    *,
    rows: int = 20_000,
    files: int = 4,
    seed: int = 7,
    day: date = date(2025, 1, 15),
    defect_rate: float = 0.01,
    with_broken_lines: bool = True,
    compression: Compression = "none",
    products: bool = True,
) -> GeneratedSample:
    """Write a clickstream sample with known defects as CSV files, plus a product catalog.

    Writes ``out_dir/events/events-NNNN.csv`` (``.csv.gz`` with gzip), each with a header,
    and removes stale ``events-NNNN.csv*`` files of an earlier generation from that folder.
    Events are ordered by time over ``day`` (UTC); duplicates are exact copies of clean
    events placed later in the same or the next file. Each of the five field defects and the
    duplicates occur on ``round(rows * defect_rate)`` records (fewer when a sample of a few
    rows could not hold them all); with ``with_broken_lines``,
    ``round(rows * defect_rate / 10)`` lines (at least 1 when ``rows >= 100``) have a wrong
    field count, and as many hold invalid UTF-8. With ``products``, also writes
    ``out_dir/products/products.ndjson``: 1,000 products plus a truncated JSON line and a
    line with a negative ``list_price``.

    Args:
        out_dir: folder to write into; created if missing.
        rows: data records to write over all files, duplicates and broken lines included.
        files: number of event files; records are split evenly, in order.
        seed: the same arguments and seed give byte-identical files.
        day: the UTC day every valid timestamp falls in.
        defect_rate: share of records per defect kind, between 0 and ``MAX_DEFECT_RATE``.
        with_broken_lines: also write structurally broken and invalid UTF-8 lines.
        compression: ``"none"`` or ``"gzip"`` (deterministic: no name or time in the header).
        products: also write the product catalog.

    Returns:
        The files written, the record count and the exact defect counts.

    Raises:
        ValueError: ``rows`` or ``files`` below 1, ``defect_rate`` out of range, or an
            unknown ``compression``.
    """
    _validate(rows=rows, files=files, defect_rate=defect_rate, compression=compression)
    counts = _defect_counts(rows, defect_rate, with_broken_lines=with_broken_lines)
    plan = _plan(rows, counts, seed=seed, day=day)
    paths = _write_event_files(plan, Path(out_dir) / "events", files, compression)
    products_file = _write_products(plan.catalog, Path(out_dir) / "products") if products else None
    return GeneratedSample(
        files=paths,
        rows=int(plan.order.size),
        defects=counts,
        products_file=products_file,
        products_defects=2 if products else 0,
    )


def write_manifest(sample: GeneratedSample, path: Path) -> None:
    """Write what a sample holds as JSON, for the demo summary and for tests.

    File paths are written relative to the manifest's folder when they are inside it.
    Keys are sorted, so equal samples give byte-identical manifests.

    Args:
        sample: the result of :func:`generate_clickstream`.
        path: the JSON file to write; its folder is created if missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "files": [_relative(file, path.parent) for file in sample.files],
        "rows": sample.rows,
        "defects": asdict(sample.defects),
        "products_file": _relative(sample.products_file, path.parent)
        if sample.products_file
        else None,
        "products_defects": sample.products_defects,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _relative(file: Path, folder: Path) -> str:
    file, folder = file.absolute(), folder.absolute()
    return file.relative_to(folder).as_posix() if file.is_relative_to(folder) else str(file)


def _validate(*, rows: int, files: int, defect_rate: float, compression: str) -> None:
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}.")
    if files < 1:
        raise ValueError(f"files must be at least 1, got {files}.")
    if not 0 <= defect_rate <= MAX_DEFECT_RATE:
        raise ValueError(f"defect_rate must be between 0 and {MAX_DEFECT_RATE}, got {defect_rate}.")
    if compression not in _OPENERS:
        raise ValueError(f"compression must be one of {sorted(_OPENERS)}, got {compression!r}.")


def _defect_counts(rows: int, defect_rate: float, *, with_broken_lines: bool) -> DefectCounts:
    """Per-kind counts; a tiny sample keeps a clean event for every duplicate to copy."""
    broken = round(rows * defect_rate / 10)
    if rows >= _MIN_ROWS_FOR_BROKEN_LINES:
        broken = max(1, broken)
    if not with_broken_lines:
        broken = 0
    each = min(round(rows * defect_rate), (rows - 2 * broken) // 7)
    return DefectCounts(
        duplicates=each,
        null_user_id=each,
        unknown_event_type=each,
        negative_price=each,
        malformed_timestamp=each,
        bad_email=each,
        malformed_lines=broken,
        invalid_utf8_lines=broken,
    )


def _plan(rows: int, counts: DefectCounts, *, seed: int, day: date) -> _Plan:
    unique = rows - counts.duplicates
    rng = np.random.default_rng([abs(seed), int(seed < 0)])
    kinds = _plan_kinds(counts, unique, rng)
    return _Plan(
        seed=seed,
        day=day,
        kinds=kinds,
        order=_plan_order(kinds, counts.duplicates, rng),
        users=_user_table(seed, max(1, rows // _EVENTS_PER_USER)),
        catalog=_catalog(seed),
    )


def _plan_kinds(counts: DefectCounts, unique: int, rng: np.random.Generator) -> np.ndarray:
    per_kind = [getattr(counts, name) for name in _KIND_COUNTS.values()]
    labels = np.repeat(np.array(list(_KIND_COUNTS), dtype=np.uint8), per_kind)
    kinds = np.zeros(unique, dtype=np.uint8)
    kinds[: labels.size] = labels
    return rng.permutation(kinds)


def _plan_order(kinds: np.ndarray, duplicates: int, rng: np.random.Generator) -> np.ndarray:
    """Event index of every output record: all events in time order, copies inserted later."""
    unique = kinds.size
    clean = np.flatnonzero(kinds == _Kind.CLEAN)
    sources = np.sort(rng.choice(clean, size=duplicates, replace=False))
    max_lag = max(1, unique // 8)
    lags = np.floor(rng.random(duplicates) * max_lag).astype(np.int64)
    after = np.minimum(sources + lags, unique - 1)
    by_position = np.argsort(after, kind="stable")
    return np.insert(np.arange(unique), after[by_position] + 1, sources[by_position])


def _mix(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijection of uint64 that scrambles every bit."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _bits(seed: int, stream: _Stream, keys: np.ndarray) -> np.ndarray:
    salt = _mix(np.array([(seed * 256 + stream) % 2**64], dtype=np.uint64))[0]
    return _mix(keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + salt)


def _uniform(seed: int, stream: _Stream, keys: np.ndarray) -> np.ndarray:
    return (_bits(seed, stream, keys) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _pick(seed: int, stream: _Stream, keys: np.ndarray, choices: int) -> np.ndarray:
    return (_bits(seed, stream, keys) % np.uint64(choices)).astype(np.int64)


def _take(values: tuple[str, ...], indices: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(indices))


def _join(*parts: pa.Array | str, separator: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, separator)


def _decimal(numbers: np.ndarray, width: int = 1) -> pa.Array:
    return pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width=width, padding="0")


def _numbered(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    return _join(prefix, _decimal(numbers, width))


@lru_cache(maxsize=1)
def _hex_words() -> pa.Array:
    return pa.array([f"{word:04x}" for word in range(1 << 16)], pa.string())


def _hex(bits: np.ndarray, words: int) -> list[pa.Array]:
    table = _hex_words()
    return [
        table.take(pa.array((bits >> np.uint64(16 * i)) & np.uint64(0xFFFF))) for i in range(words)
    ]


def _user_table(seed: int, user_count: int) -> _Users:
    numbers = np.arange(1, user_count + 1, dtype=np.int64)
    domains = _take(_DOMAINS, _pick(seed, _Stream.DOMAIN, numbers, len(_DOMAINS)))
    agents = tuple(_csv_field(agent) for agent in _USER_AGENTS)
    return _Users(
        ids=_numbered("u", numbers, max(5, len(str(user_count)))),
        emails=_join("user", _decimal(numbers), "@", domains),
        ip_addresses=_ip_addresses(seed, numbers),
        user_agents=_take(agents, _pick(seed, _Stream.USER_AGENT, numbers, len(agents))),
    )


def _csv_field(value: str) -> str:
    if any(char in value for char in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _ip_addresses(seed: int, numbers: np.ndarray) -> pa.Array:
    v4 = _bits(seed, _Stream.IPV4, numbers)
    first = _decimal(np.uint64(1) + (v4 >> np.uint64(24)) % np.uint64(223))
    rest = [_decimal((v4 >> np.uint64(shift)) & np.uint64(0xFF)) for shift in (16, 8, 0)]
    ipv4 = _join(first, *rest, separator=".")
    g1, g2, g3, g4 = _hex(_bits(seed, _Stream.IPV6, numbers), 4)
    ipv6 = _join("2001:db8:", g1, ":", g2, "::", g3, ":", g4)
    is_v6 = _uniform(seed, _Stream.IP_VERSION, numbers) < _IPV6_SHARE
    return pc.if_else(pa.array(is_v6), ipv6, ipv4)


def _catalog(seed: int) -> _Catalog:
    numbers = np.arange(1, PRODUCT_COUNT + 1, dtype=np.int64)
    spread = _uniform(seed, _Stream.PRICE, numbers)
    cents = np.rint(np.exp(np.log(100.0) + spread * np.log(2_000.0))).astype(np.int64)
    return _Catalog(
        ids=_numbered("p", numbers, 4),
        prices=_join(_decimal(cents // 100), ".", _decimal(cents % 100, 2)),
        cents=cents,
        categories=_take(_CATEGORIES, _pick(seed, _Stream.CATEGORY, numbers, len(_CATEGORIES))),
    )


def _write_products(catalog: _Catalog, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"product_id": pid, "category": category, "list_price": cents / 100})
        for pid, category, cents in zip(
            catalog.ids.to_pylist(),
            catalog.categories.to_pylist(),
            catalog.cents.tolist(),
            strict=True,
        )
    ]
    lines.insert(PRODUCT_COUNT * 2 // 5, _TRUNCATED_PRODUCT_LINE)
    lines.insert(PRODUCT_COUNT * 4 // 5, json.dumps(_NEGATIVE_PRODUCT))
    path = folder / "products.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def _plain(path: Path) -> Iterator[BufferedIOBase]:
    with path.open("wb") as out:
        yield out


@contextmanager
def _gzipped(path: Path) -> Iterator[BufferedIOBase]:
    with (
        path.open("wb") as raw,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=_GZIP_LEVEL
        ) as out,
    ):
        yield out


_OPENERS: dict[str, tuple[str, Callable[[Path], AbstractContextManager[BufferedIOBase]]]] = {
    "none": (".csv", _plain),
    "gzip": (".csv.gz", _gzipped),
}


def _write_event_files(
    plan: _Plan, folder: Path, files: int, compression: Compression
) -> tuple[Path, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    suffix, opener = _OPENERS[compression]
    paths = tuple(folder / f"events-{number:04d}{suffix}" for number in range(files))
    _remove_stale_event_files(folder, keep=paths)
    total = plan.order.size
    for number, path in enumerate(paths):
        records = plan.order[total * number // files : total * (number + 1) // files]
        with opener(path) as out:
            out.write((",".join(EVENT_COLUMNS) + "\n").encode())
            for start in range(0, records.size, _CHUNK_ROWS):
                out.write(_render(plan, records[start : start + _CHUNK_ROWS]))
    return paths


def _remove_stale_event_files(folder: Path, *, keep: tuple[Path, ...]) -> None:
    for path in folder.glob("events-[0-9][0-9][0-9][0-9].csv*"):
        if path not in keep and path.suffix in {".csv", ".gz"}:
            path.unlink()


def _render(plan: _Plan, events: np.ndarray) -> pa.Buffer:
    """The CSV lines of ``events`` (event indexes), each ending with a newline, as bytes."""
    kinds = plan.kinds[events]
    fields = _spoil_fields(plan, _clean_fields(plan, events, kinds), events, kinds)
    columns = [fields[name] for name in EVENT_COLUMNS]
    lines = _join(*columns, separator=",")
    lines = _break_structure(plan.seed, lines, columns, events, kinds == _Kind.MALFORMED_LINE)
    lines = _inject_invalid_utf8(lines.cast(pa.binary()), columns, kinds == _Kind.INVALID_UTF8)
    lines = pc.binary_join_element_wise(lines, _bytes(b"\n"), _bytes(b""))
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return lines.buffers()[2].slice(start, end - start)


def _bytes(value: bytes) -> pa.Scalar:
    return pa.scalar(value, pa.binary())


def _clean_fields(plan: _Plan, events: np.ndarray, kinds: np.ndarray) -> dict[str, pa.Array]:
    seed, users, catalog = plan.seed, plan.users, plan.catalog
    user_index = _skewed_index(seed, _Stream.USER, events, len(users.ids), _USER_SKEW)
    user_rows = pa.array(user_index)
    millis = _millis_into_day(seed, events, plan.kinds.size)
    event_types = _event_types(seed, events, kinds)
    has_product = pa.array(event_types != _SEARCH)
    products = pa.array(_skewed_index(seed, _Stream.PRODUCT, events, PRODUCT_COUNT, _PRODUCT_SKEW))
    product_ids = pc.if_else(has_product, catalog.ids.take(products), "")
    terms = _take(_SEARCH_TERMS, _pick(seed, _Stream.SEARCH_TERM, events, len(_SEARCH_TERMS)))
    return {
        "event_id": _numbered("e", events, 9),
        "user_id": users.ids.take(user_rows),
        "session_id": _session_ids(seed, user_index, millis),
        "event_type": _take(EVENT_TYPES, event_types),
        "timestamp": _timestamps(plan.day, millis),
        "product_id": product_ids,
        "product_price": pc.if_else(has_product, catalog.prices.take(products), ""),
        "email": users.emails.take(user_rows),
        "ip_address": users.ip_addresses.take(user_rows),
        "user_agent": users.user_agents.take(user_rows),
        "page_url": _join(
            _take(_URL_PREFIXES, event_types), pc.if_else(has_product, product_ids, terms)
        ),
    }


def _skewed_index(
    seed: int, stream: _Stream, events: np.ndarray, size: int, skew: float
) -> np.ndarray:
    """Indexes in ``[0, size)`` where low indexes are the popular ones."""
    drawn = np.floor(size * _uniform(seed, stream, events) ** skew).astype(np.int64)
    return np.minimum(drawn, size - 1)


def _millis_into_day(seed: int, events: np.ndarray, unique: int) -> np.ndarray:
    """Milliseconds since midnight, increasing with the event index, all inside the day."""
    jittered = events + _uniform(seed, _Stream.TIME, events)
    return np.minimum(np.floor(jittered * (_DAY_MS / unique)).astype(np.int64), _DAY_MS - 1)


def _event_types(seed: int, events: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Event type indexes; a negative price needs a product, so those events are never searches."""
    weights = np.cumsum(EVENT_TYPE_WEIGHTS) / np.sum(EVENT_TYPE_WEIGHTS)
    drawn = np.searchsorted(weights, _uniform(seed, _Stream.EVENT_TYPE, events), side="right")
    drawn = np.minimum(drawn, len(EVENT_TYPES) - 1)
    return np.where((kinds == _Kind.NEGATIVE_PRICE) & (drawn == _SEARCH), _PAGE_VIEW, drawn)


def _session_ids(seed: int, user_index: np.ndarray, millis: np.ndarray) -> pa.Array:
    """One session per user and half hour of the day."""
    windows_per_day = _DAY_MS // _SESSION_MS
    keys = user_index * windows_per_day + millis // _SESSION_MS
    return _join("s", *_hex(_bits(seed, _Stream.SESSION, keys), 3))


def _timestamps(day: date, millis: np.ndarray) -> pa.Array:
    """ISO 8601 UTC with milliseconds, assembled from lookup tables (strftime is ~10x slower)."""
    seconds, fraction = pa.array(millis // 1000), pa.array(millis % 1000)
    return _join(
        f"{day.isoformat()}T",
        _clock_times().take(seconds),
        ".",
        _zero_padded(3).take(fraction),
        "Z",
    )


@lru_cache(maxsize=4)
def _zero_padded(width: int) -> pa.Array:
    return _decimal(np.arange(10**width), width)


@lru_cache(maxsize=1)
def _clock_times() -> pa.Array:
    """``HH:MM:SS`` for every second of a day, indexed by the second."""
    seconds = np.arange(_DAY_MS // 1000)
    two_digits = _zero_padded(2)
    parts = (seconds // 3600, seconds // 60 % 60, seconds % 60)
    return _join(*(two_digits.take(pa.array(part)) for part in parts), separator=":")


def _malformed_timestamps(day: date) -> tuple[str, ...]:
    return (
        f"{day.year}-13-45T99:00:00Z",
        "yesterday",
        f"{day:%d/%m/%Y} 10:00",
        f"{day.isoformat()}T25:61:00Z",
    )


Spoiler = Callable[[_Plan, np.ndarray, pa.Array], pa.Array]


def _null_user_id(plan: _Plan, events: np.ndarray, clean: pa.Array) -> pa.Array:
    return pc.fill_null(pa.nulls(len(clean), pa.string()), "")


def _unknown_event_type(plan: _Plan, events: np.ndarray, clean: pa.Array) -> pa.Array:
    choice = _pick(plan.seed, _Stream.DEFECT_VALUE, events, len(UNKNOWN_EVENT_TYPES))
    return _take(UNKNOWN_EVENT_TYPES, choice)


def _negative_price(plan: _Plan, events: np.ndarray, clean: pa.Array) -> pa.Array:
    return _join("-", clean)


def _malformed_timestamp(plan: _Plan, events: np.ndarray, clean: pa.Array) -> pa.Array:
    values = _malformed_timestamps(plan.day)
    return _take(values, _pick(plan.seed, _Stream.DEFECT_VALUE, events, len(values)))


def _bad_email(plan: _Plan, events: np.ndarray, clean: pa.Array) -> pa.Array:
    return _take(BAD_EMAILS, _pick(plan.seed, _Stream.DEFECT_VALUE, events, len(BAD_EMAILS)))


_FIELD_SPOILERS: dict[_Kind, tuple[str, Spoiler]] = {
    _Kind.NULL_USER_ID: ("user_id", _null_user_id),
    _Kind.UNKNOWN_EVENT_TYPE: ("event_type", _unknown_event_type),
    _Kind.NEGATIVE_PRICE: ("product_price", _negative_price),
    _Kind.MALFORMED_TIMESTAMP: ("timestamp", _malformed_timestamp),
    _Kind.BAD_EMAIL: ("email", _bad_email),
}


def _spoil_fields(
    plan: _Plan, fields: dict[str, pa.Array], events: np.ndarray, kinds: np.ndarray
) -> dict[str, pa.Array]:
    spoiled = dict(fields)
    for kind, (column, spoil) in _FIELD_SPOILERS.items():
        mask = kinds == kind
        rows = np.flatnonzero(mask)
        if rows.size:
            bad = spoil(plan, events[rows], fields[column].take(pa.array(rows)))
            spoiled[column] = pc.replace_with_mask(fields[column], pa.array(mask), bad)
    return spoiled


def _break_structure(
    seed: int, lines: pa.Array, columns: list[pa.Array], events: np.ndarray, mask: np.ndarray
) -> pa.Array:
    """Cut half of the masked lines after six fields; give the others two fields too many."""
    rows = np.flatnonzero(mask)
    if not rows.size:
        return lines
    taken = pa.array(rows)
    too_few = _join(*(column.take(taken) for column in columns[:6]), separator=",")
    too_many = _join(lines.take(taken), "extra", "fields", separator=",")
    is_short = pa.array(_pick(seed, _Stream.DEFECT_VALUE, events[rows], 2) == 0)
    return pc.replace_with_mask(lines, pa.array(mask), pc.if_else(is_short, too_few, too_many))


def _inject_invalid_utf8(lines: pa.Array, columns: list[pa.Array], mask: np.ndarray) -> pa.Array:
    """Append bytes that are not UTF-8 to the page URL of the masked lines."""
    rows = np.flatnonzero(mask)
    if not rows.size:
        return lines
    taken = pa.array(rows)
    fields = [column.take(taken).cast(pa.binary()) for column in columns]
    fields[-1] = pc.binary_join_element_wise(fields[-1], _bytes(_INVALID_UTF8), _bytes(b""))
    bad = pc.binary_join_element_wise(*fields, _bytes(b","))
    return pc.replace_with_mask(lines, pa.array(mask), bad)
