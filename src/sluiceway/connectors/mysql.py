"""What the MySQL / MariaDB plug-ins share: connection settings and credentials read from the
environment (a DSN variable, or host/port/user with a password variable), never logged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from sluiceway.errors import ConfigError


class MySqlSettings(Protocol):
    """The connection fields of a MySQL plug-in config."""

    @property
    def dsn_env(self) -> str | None: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str | None: ...
    @property
    def password_env(self) -> str | None: ...
    @property
    def database(self) -> str | None: ...


@dataclass(frozen=True, repr=False)
class Connection:
    """Where to connect; `password` never reaches a message, a log or a result."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def url(self) -> str:
        """The connectorx URL (holds the password: hand it to connectorx only)."""
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return (
            f"mysql://{quote(self.user, safe='')}{secret}@{self.host}:{self.port}/"
            f"{quote(self.database, safe='')}"
        )

    def where(self) -> str:
        """host:port/database, for messages."""
        return f"{self.host}:{self.port}/{self.database}"

    def scrub(self, text: str) -> str:
        """`text` without the password."""
        return text.replace(self.password, "***") if self.password else text


def connection_of(config: MySqlSettings, environ: Mapping[str, str]) -> Connection:
    """The connection settings of `config`, credentials taken from the environment.

    Raises:
        ConfigError: a named variable is not set, or the DSN is not a mysql:// URL.
    """
    if config.dsn_env is not None:
        return _from_dsn(config.dsn_env, _variable(environ, config.dsn_env, "dsn_env"))
    password = (
        _variable(environ, config.password_env, "password_env") if config.password_env else ""
    )
    assert config.user is not None and config.database is not None
    return Connection(config.host, config.port, config.user, password, config.database)


def _variable(environ: Mapping[str, str], name: str, setting: str) -> str:
    value = environ.get(name)
    if value is None:
        raise ConfigError(
            f"environment variable {name} (named by {setting} of a mysql source) is not set; "
            "export it before the run"
        )
    return str(value)


def _from_dsn(variable: str, dsn: str) -> Connection:
    form = (
        f"environment variable {variable} does not hold a DSN of the form "
        "mysql://user:password@host:port/database"
    )
    parts = urlsplit(dsn)
    database = unquote(parts.path.lstrip("/"))
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not database:
        raise ConfigError(f"{form} (scheme, host and database are required)")
    try:
        port = parts.port
    except ValueError:  # its message would quote a piece of the password
        raise ConfigError(
            f"{form}: the part after the host is not a port number. A password holding '@', "
            "':', '/', '#' or '%' must be URL-encoded (%40, %3A, %2F, %23, %25)"
        ) from None
    return Connection(
        parts.hostname,
        port or 3306,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
        database,
    )
