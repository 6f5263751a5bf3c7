"""Where the run store lives: `<state_dir>/runs.db`, or the file or PostgreSQL URL named by
$SLUICE_RUN_STORE or the project's `run_store:`; how a location is shown without secrets."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit, urlunsplit

from sluiceway.errors import ConfigError

Dialect = Literal["sqlite", "postgresql"]
STORE_ENV = "SLUICE_RUN_STORE"
DEFAULT_SCHEMA = "sluice"
_PG_SCHEMES = ("postgresql", "postgres")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_KEYWORDS = re.compile(
    r"^\s*(host|hostaddr|port|dbname|user|password|sslmode|service)\s*=", re.IGNORECASE
)
"""The start of a libpq keyword/value connection string."""
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
"""libpq URL parameters whose values are secrets (hidden like the user part's password)."""


@dataclass(frozen=True)
class StoreLocation:
    """A run store: a SQLite file, or a PostgreSQL database and schema.

    Attributes:
        dialect: 'sqlite' or 'postgresql'.
        path: the SQLite file (None on PostgreSQL).
        url: the libpq URL without the `schema` parameter (None on SQLite); left out of
            `repr` since it may hold a password.
        schema: the PostgreSQL schema of the tables (its exact, case-sensitive name).
    """

    dialect: Dialect
    path: Path | None = None
    url: str | None = field(default=None, repr=False)
    schema: str = DEFAULT_SCHEMA

    @property
    def label(self) -> str:
        """A printable name: the file, or the URL with its password replaced by ***."""
        if self.path is not None:
            return str(self.path)
        return f"{scrub_url(self.url or '')} (schema {self.schema})"

    def exists(self) -> bool:
        """False for a SQLite file not created yet; a server is asked only when queried."""
        return self.path.is_file() if self.path is not None else True

    def scrub(self, text: str) -> str:
        """`text` with this location's passwords (if any), as written in the URL and
        percent-decoded, replaced by ***."""
        for secret in _secrets(self.url or ""):
            text = text.replace(secret, "***")
        return text


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """The `key=value` items of a URL query as written (still percent-encoded)."""
    return [(item.partition("=")[0], item) for item in query.split("&") if item]


def _secrets(url: str) -> list[str]:
    """The passwords in `url` (user part and secret parameters), raw and decoded, longest
    first so that a secret containing another is replaced whole."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    raw = [userinfo.partition(":")[2]] if ":" in userinfo else []
    raw += [
        item.partition("=")[2]
        for key, item in _query_pairs(parts.query)
        if unquote_plus(key) in _SECRET_PARAMS
    ]
    found = {s for r in raw for s in (r, unquote(r), unquote_plus(r)) if s}
    return sorted(found, key=len, reverse=True)


def scrub_url(url: str) -> str:
    """`url` with the password of its user part, and any `password` parameter, replaced by
    ***; the host is kept as written (an IPv6 address keeps its brackets)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = f"{userinfo.partition(':')[0]}:***"
    query = "&".join(
        f"{key}=***" if unquote_plus(key) in _SECRET_PARAMS else item
        for key, item in _query_pairs(parts.query)
    )
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hostport}", query=query))


def parse_location(value: str, *, base: Path) -> StoreLocation:
    """A `run_store` value: a PostgreSQL URL, or a SQLite file (relative to `base`).

    The URL's other parameters are kept as written (libpq decodes them); `schema` is
    taken exactly, case included.

    Raises:
        ConfigError: a URL of another scheme, or a schema name that is not an identifier or
            is reserved (`pg_...`).
    """
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if not scheme and _KEYWORDS.match(value):
        # Not echoed: it may hold password=...
        raise ConfigError(
            "run store is a libpq key=value string (host=... dbname=...), which would be "
            "taken for a SQLite file name: write it as a URL, "
            "postgresql://user@host:5432/db?schema=sluice (the password in PGPASSWORD or "
            "~/.pgpass)"
        )
    if not scheme:
        return StoreLocation("sqlite", path=(base / Path(value).expanduser()).resolve())
    if scheme not in _PG_SCHEMES:
        raise ConfigError(
            f"run store {scrub_url(value)!r} has scheme '{scheme}': use a file path or "
            "postgresql://user@host:5432/db?schema=sluice"
        )
    parts = urlsplit(value)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), DEFAULT_SCHEMA)
    if not _IDENTIFIER.fullmatch(schema):
        raise ConfigError(
            f"run store schema {schema!r} is not a plain identifier: use letters, digits and _"
        )
    if schema.lower().startswith("pg_"):
        raise ConfigError(
            f"run store schema {schema!r} starts with 'pg_', which PostgreSQL reserves for "
            "system schemas: choose another name, e.g. ?schema=sluice"
        )
    rest = "&".join(
        item for key, item in _query_pairs(parts.query) if unquote_plus(key) != "schema"
    )
    url = urlunsplit(parts._replace(scheme="postgresql", query=rest))
    return StoreLocation("postgresql", url=url, schema=schema)


def resolve_location(
    state_dir: Path,
    *,
    run_store: str | None = None,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> StoreLocation:
    """Where the run store is: $SLUICE_RUN_STORE, else `run_store` (the project's setting,
    relative to `root`), else `<state_dir>/runs.db`.

    Raises:
        ConfigError: an unusable URL (see `parse_location`).
    """
    env = os.environ if environ is None else environ
    if env.get(STORE_ENV):
        return parse_location(env[STORE_ENV], base=Path.cwd())
    if run_store:
        return parse_location(run_store, base=root or Path.cwd())
    return StoreLocation("sqlite", path=(Path(state_dir) / "runs.db").resolve())


def as_location(target: StoreLocation | str | Path) -> StoreLocation:
    """A location from a location, a PostgreSQL URL or a SQLite path (existing callers)."""
    if isinstance(target, StoreLocation):
        return target
    return parse_location(str(target), base=Path.cwd())
