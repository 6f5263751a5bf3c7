"""The source inventory check of the pre-flight review: every source states its volume,
freshness, owner and access pattern (matching how it really reads), and no secret is written
in clear.

Credentials are read from the YAML data as written (before `${ENV}` resolution). A value is
a reference when every secret part of it is a `${NAME}` (or `${NAME:-}`) reference:
`Bearer ${TOKEN}` is one, `${TOKEN:-abc}` is not (the default is the secret, in clear).
Passwords inside URLs (`redis://:pw@host`) and secrets in URL query strings (`?api_key=...`)
count too. Results name the YAML path, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from sluiceway.core.spec import Pipeline
from sluiceway.gates.findings import Finding, Status

CHECK = "source inventory"
INVENTORY_KEYS = ("volume", "freshness", "owner", "access_pattern")
_CDC_TYPES = ("postgres_cdc", "mysql_cdc")

_SECRET_WORDS = (
    *("password", "passwd", "secret", "token", "access_key_id", "api_key", "apikey"),
    *("authorization", "private_key"),
)
_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-(?P<default>[^}]*))?\}")
_AUTH_SCHEMES = frozenset({"", "bearer", "basic", "token"})
_URL_CREDENTIALS = re.compile(r"://[^/\s:@]*:(?P<password>[^@\s]*)@")
_URL_QUERY = re.compile(r"[?&](?P<name>[^=&#\s]+)=(?P<value>[^&#\s]*)")


def finding(check: str, status: Status, reason: str, fix: str = "", where: str = "") -> Finding:
    """A readiness finding."""
    return Finding("readiness", check, status, reason, fix if status != "pass" else "", where)


def missing(model: Any, keys: tuple[str, ...]) -> list[str]:
    """The `keys` of `model` that are unset (None)."""
    return [key for key in keys if getattr(model, key) is None]


def source_inventory(pipeline: Pipeline, raw: Mapping[str, Any] | None) -> list[Finding]:
    """Every source has an inventory, and every credential is a `${ENV}` reference."""
    check = CHECK
    problems: list[Finding] = []
    for name, source in pipeline.sources.items():
        where = f"sources.{name}.inventory"
        absent = (
            INVENTORY_KEYS
            if source.inventory is None
            else missing(source.inventory, INVENTORY_KEYS)
        )
        if absent:
            problems.append(
                finding(
                    check,
                    "fail",
                    f"{where} is missing {', '.join(absent)}"
                    + (" (no inventory at all)" if source.inventory is None else ""),
                    f"add to {where}: {_inventory_example(absent, source)}",
                    where,
                )
            )
    mismatches = [_pattern_mismatch(name, source) for name, source in pipeline.sources.items()]
    problems += [mismatch for mismatch in mismatches if mismatch is not None]
    problems += [finding(check, "fail", *args) for args in literal_credentials(raw)]
    noted = "credentials are ${ENV} references" if raw is not None else "credentials not checked"
    return problems or [
        finding(
            check,
            "pass",
            f"every source ({', '.join(pipeline.sources)}) states volume, freshness, owner and "
            f"access_pattern; {noted}",
        )
    ]


_PATTERNS_MATCHING = {
    "cdc": {"cdc", "stream"},
    "stream": {"stream"},
    "incremental": {"incremental", "api"},
    "api": {"api", "full", "snapshot"},
    "full": {"full", "snapshot"},
}


def _pattern_mismatch(name: str, source: Any) -> Finding | None:
    declared = source.inventory.access_pattern if source.inventory else None
    actual = access_pattern_of(source)
    if declared is None or declared in _PATTERNS_MATCHING[actual]:
        return None
    where = f"sources.{name}.inventory.access_pattern"
    return finding(
        CHECK,
        "warn",
        f"{where} is {declared} but the source's settings read it as {actual}: volume, "
        "cost and freshness figures would describe another pipeline",
        f"set {where}: {actual}",
        where,
    )


def _inventory_example(keys: tuple[str, ...] | list[str], source: Any) -> str:
    example = {
        "volume": "volume: 2M rows/day",
        "freshness": "freshness: 1d",
        "owner": "owner: team@example.com",
        "access_pattern": f"access_pattern: {access_pattern_of(source)}",
    }
    return "{" + ", ".join(example[k] for k in keys) + "}"


def access_pattern_of(source: Any) -> str:
    """How a source actually reads: cdc, stream, incremental, api or full."""
    if source.type in _CDC_TYPES:
        return "cdc"
    if getattr(source, "streaming", False):
        return "stream"
    incremental = getattr(source, "incremental", None)
    if getattr(source, "mode", None) == "incremental" or incremental not in (None, False):
        return "incremental"
    return "api" if source.type == "api" else "full"


def literal_credentials(raw: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    """(reason, fix, where) for each secret written in clear in the sources, steps, sinks
    and dead_letter of the raw YAML data. The value itself is never part of the result.

    Args:
        raw: the spec's YAML data as written; None or not a mapping: nothing is checked.

    Returns:
        One (reason, fix, YAML path) per value holding a secret in clear.
    """
    if not isinstance(raw, Mapping):
        return []
    sections: list[tuple[str, Any]] = [("dead_letter", raw.get("dead_letter"))]
    for section in ("sources", "steps", "sinks"):
        items = raw.get(section)
        if isinstance(items, Mapping):
            sections += [(f"{section}.{k}", v) for k, v in items.items()]
        elif isinstance(items, list):
            sections += [(f"{section}[{i}]", v) for i, v in enumerate(items)]
    return [
        _problem(path, key, why) for root, data in sections for path, key, why in _walk(root, data)
    ]


def _walk(path: str, data: Any) -> Iterator[tuple[str, str, str]]:
    """(YAML path, key, how it is in clear) of every value under `data` holding a secret."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = _normal(str(key))
            if name.endswith("_env") or name == "secret_options":
                continue  # values there are names of environment variables
            child = f"{path}.{key}"
            if isinstance(value, Mapping | list):
                yield from _walk(child, value)
            elif why := _secret_in_clear(name, value):
                yield child, str(key), why
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _walk(f"{path}[{index}]", item)


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _is_secret_name(name: str) -> bool:
    return any(word in _normal(name) for word in _SECRET_WORDS)


def _secret_in_clear(name: str, value: Any) -> str:
    """How `value` holds a secret in clear ('' when it does not)."""
    if _is_secret_name(name) and (why := _literal(value)):
        return why
    if not isinstance(value, str):
        return ""
    for match in _URL_CREDENTIALS.finditer(value):
        if why := _literal(match.group("password")):
            return f"{why} in the URL's password"
    for match in _URL_QUERY.finditer(value):
        if _is_secret_name(match.group("name")) and (why := _literal(match.group("value"))):
            return f"{why} in the URL's query parameter {match.group('name')}"
    return ""


def _literal(value: Any) -> str:
    """'written in clear' or 'written as a ${ENV} default' for a secret value, '' for none
    or for a reference."""
    if value is None or isinstance(value, bool) or value == "":
        return ""
    if not isinstance(value, str):
        return "written in clear"
    if any(m.group("default") for m in _ENV_REF.finditer(value)):
        return "written in clear as the default of a ${ENV} reference"
    is_reference = bool(_ENV_REF.search(value))
    rest = _ENV_REF.sub("", value).strip().lower()
    return "" if is_reference and rest in _AUTH_SCHEMES else "written in clear"


def _problem(path: str, key: str, why: str) -> tuple[str, str, str]:
    variable = re.sub(r"[^A-Z0-9]+", "_", path.upper()).strip("_")
    return (
        f"{path} holds a credential {why} (value not shown); secrets must be ${{ENV}} references",
        f"export the value as an environment variable and write {key}: ${{{variable}}} "
        "(or use the source's *_env setting, e.g. password_env / dsn_env); rotate the "
        "exposed secret",
        path,
    )
