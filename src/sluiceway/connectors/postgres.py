"""PostgreSQL connections for the `postgres` source and sink: settings, credentials, errors.

Credentials come from the environment by name (`dsn_env`, `password_env`); they are never
logged and never appear in an error message: every driver message is scrubbed of the DSN
and the password before it is raised.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc_pg
from pydantic import Field, model_validator

from sluiceway.core.spec import Model
from sluiceway.errors import ConfigError, SluicewayError, TransientError

# libpq connect failures that a retry can fix: the server is down, starting or unreachable.
_UNREACHABLE = re.compile(
    r"Connection refused|timeout expired|could not translate host name|No route to host|"
    r"Network is unreachable|the database system is (?:starting up|shutting down|in recovery)|"
    r"server closed the connection unexpectedly|too many clients",
    re.IGNORECASE,
)
_DETAIL = re.compile(r"\n\s*DETAIL:.*?(?=\n\s*[A-Z]+:|\Z)", re.DOTALL)
_QUERY_WAS = re.compile(r"\n*Query was: .*", re.DOTALL)
_FAILED_QUERY = re.compile(r"Failed to execute query '.*?': ", re.DOTALL)
# ADBC's wrapping: a status code, the library name, the step, and the SQLSTATE (kept apart).
_ADBC_NOISE = re.compile(
    r"^[A-Z_]+: |\[libpq\] |Failed to prepare query: |\s*\.?\s*SQLSTATE: \w+\s*$"
)


class PostgresConnection(Model):
    """The connection fields of a postgres source or sink config (a base of both)."""

    dsn_env: str | None = Field(
        None,
        description="Environment variable holding a libpq DSN or URL "
        "('host=... dbname=...' or 'postgresql://user:pass@host/db'); excludes host/port/...",
    )
    host: str | None = Field(None, description="Server host (default 127.0.0.1).")
    port: int | None = Field(None, ge=1, le=65535, description="Server port (default 5432).")
    user: str | None = Field(None, description="User name (default postgres).")
    dbname: str | None = Field(None, description="Database name (default postgres).")
    password_env: str | None = Field(
        None, description="Environment variable holding the password (never the password)."
    )

    @model_validator(mode="after")
    def _check_connection(self) -> Self:
        parts = [self.host, self.port, self.user, self.dbname, self.password_env]
        if self.dsn_env and any(p is not None for p in parts):
            raise ValueError(
                "set either dsn_env (a variable holding the whole DSN) or host/port/user/"
                "dbname/password_env, not both"
            )
        return self

    def where(self) -> str:
        """Where the server is, for messages: never a credential."""
        if self.dsn_env:
            return f"the server in ${self.dsn_env}"
        return f"{self.host or '127.0.0.1'}:{self.port or 5432}/{self.dbname or 'postgres'}"


def resolve_dsn(config: PostgresConnection) -> tuple[str, list[str]]:
    """The libpq connection string of `config`, and the secrets to scrub from messages.

    Raises:
        ConfigError: `dsn_env` or `password_env` names a variable that is not set.
    """
    if config.dsn_env:
        dsn = _env(config.dsn_env, "dsn_env", "a libpq DSN such as postgresql://user@host/db")
        _check_url(config.dsn_env, dsn)
        return dsn, [dsn, *_passwords_in(dsn)]
    settings = {
        "host": config.host or "127.0.0.1",
        "port": str(config.port or 5432),
        "user": config.user or "postgres",
        "dbname": config.dbname or "postgres",
        "application_name": "sluiceway",
    }
    secrets: list[str] = []
    if config.password_env:
        password = _env(config.password_env, "password_env", "the password")
        settings["password"] = password
        secrets.append(password)
    return " ".join(f"{k}={_dsn_value(v)}" for k, v in settings.items()), secrets


def _env(variable: str, field: str, what: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(
            f"{field} names ${variable}, which is not set: export {variable} with {what} "
            "(the spec only names the variable, so the secret stays out of it)"
        )
    return value


def _dsn_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _check_url(variable: str, dsn: str) -> None:
    """A URL DSN whose password holds an unencoded '@', ':' or '/' would be cut in the
    wrong place: the driver then quotes a piece of the password as the host or the port.

    Raises:
        ConfigError: the URL's authority does not end in host[:port] (the message quotes
            nothing of the DSN).
    """
    if not re.match(r"^postgres(?:ql)?://", dsn):
        return
    after = dsn.split("://", 1)[1]
    cut = re.search(r"[/?#]", after)
    authority = after[: cut.start()] if cut else after
    path = re.split(r"[?#]", after[cut.start() :], maxsplit=1)[0] if cut else ""
    userinfo, _, hostport = authority.rpartition("@")
    port = hostport.rsplit("]", 1)[-1].partition(":")[2]
    if "@" in userinfo or "@" in path or not re.fullmatch(r"\d*(,[^,]*)*", port):
        raise ConfigError(
            f"${variable} is not a valid postgresql:// URL: what follows the host is not a port "
            "number, or the password holds an unencoded '@'. URL-encode the password's special "
            "characters ('@' %40, ':' %3A, '/' %2F, '#' %23, '%' %25), or use the key=value "
            "form (host=... password='...')"
        )


def _passwords_in(dsn: str) -> list[str]:
    found = re.findall(r"password\s*=\s*'((?:[^'\\]|\\.)*)'|password\s*=\s*(\S+)", dsn)
    url = re.match(r"^\w+://[^:/@]*:(.*)@[^@/?#]*(?:[/?#]|$)", dsn)
    values = [a or b for a, b in found]
    return values + ([url.group(1)] if url and url.group(1) else [])


def scrub(message: str, secrets: list[str]) -> str:
    """`message` without any secret, the PostgreSQL DETAIL lines (they quote row values)
    and the echoed query text."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            message = message.replace(secret, "***")
    message = _QUERY_WAS.sub("", _DETAIL.sub("", _FAILED_QUERY.sub("", message)))
    message = re.sub(r"\n\s*LINE \d+: .*?\n\s*\^", "", message)
    message = _ADBC_NOISE.sub("", message.strip())
    return re.sub(r"\s+", " ", message).strip().rstrip(".")


@contextmanager
def connect(
    config: PostgresConnection, *, role: str, autocommit: bool = False
) -> Iterator[adbc_pg.Connection]:
    """An ADBC connection to the server of `config`, closed on exit.

    Args:
        role: 'source orders' / 'sink public.orders', for messages.

    Raises:
        TransientError: the server is unreachable, starting up or out of connection slots.
        ConfigError: the server refused the login (user, password, database).
    """
    dsn, secrets = resolve_dsn(config)
    try:
        conn = adbc_pg.connect(dsn, autocommit=autocommit)
    except adbc_driver_manager.Error as exc:
        raise _connect_error(config, role, scrub(str(exc), secrets)) from None
    try:
        yield conn
    finally:
        conn.close()


def _connect_error(config: PostgresConnection, role: str, message: str) -> SluicewayError:
    where = config.where()
    if _UNREACHABLE.search(message):
        return TransientError(
            f"postgres {role}: cannot reach {where}: {message}. Start the server (a local "
            "one: `bash scripts/services/postgres.sh` in a sluiceway checkout) or fix host/port.",
            context={"postgres": where},
        )
    return ConfigError(
        f"postgres {role}: {where} refused the connection: {message}. Check the user, the "
        "database and the password variable.",
        context={"postgres": where},
    )


def driver_message(exc: BaseException, config: PostgresConnection) -> str:
    """The driver's message for `exc`, scrubbed of secrets, DETAIL lines and query text."""
    try:
        _, secrets = resolve_dsn(config)
    except ConfigError:
        secrets = []
    return scrub(str(exc), secrets)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, when the server sent one."""
    state: Any = getattr(exc, "sqlstate", None)
    return str(state) if state else None


def quote_pg_ident(name: str) -> str:
    """Quote an identifier for PostgreSQL."""
    return '"' + name.replace('"', '""') + '"'


def quote_pg_literal(value: str) -> str:
    """Quote a string literal for PostgreSQL (standard_conforming_strings on)."""
    return "'" + value.replace("'", "''") + "'"


def qualified(table: str) -> str:
    """`schema.table` (or `table`) quoted part by part."""
    return ".".join(quote_pg_ident(part) for part in split_table(table))


def split_table(table: str) -> list[str]:
    """The parts of `schema.table`: one or two non-empty names."""
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"table '{table}' must be 'table' or 'schema.table'")
    return parts
