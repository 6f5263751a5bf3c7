"""Great Expectations suites → sluiceway checks files (`sluice import-gx`).

A suite is JSON in the 0.x shape (`expectation_suite_name`, expectations with
`expectation_type`) or the 1.x shape (`name`, expectations with `type` and an optional
`severity`). Each expectation maps to the check registered under its GE name: every check
config with a `ge_name` registers it as an alias, so checks added later convert without a
change here. A few expectations with no alias have an equal check under other arguments
(`DERIVED`).

Nothing is guessed: a kwarg that would change the meaning and has no equivalent, an
expectation with no equivalent, or arguments the check's model rejects leave the expectation
out, and the conversion says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from sluiceway.core import registry
from sluiceway.core.registry import Plugin
from sluiceway.core.spec import CheckConfig
from sluiceway.errors import SluicewayError

__all__ = [
    "Conversion",
    "ExpectationReport",
    "SuiteError",
    "convert_suite",
    "read_suite",
]

Kwargs = dict[str, Any]
Outcome = Literal["converted", "skipped"]

# Presentation and bookkeeping of a GE run; they never change what is expected.
IGNORED_KWARGS = frozenset({"result_format", "include_config", "catch_exceptions", "meta"})
# GE kwargs whose value here is what sluiceway does anyway (NULL rows are not judged).
NEUTRAL_VALUES: dict[str, frozenset[Any]] = {
    "ignore_row_if": frozenset({"both_values_are_missing", "all_values_are_missing"}),
    "parse_strings_as_datetimes": frozenset({False}),
    "allow_cross_type_comparisons": frozenset({False}),
}
SEVERITIES = {"critical": "error", "warning": "warn", "info": "warn"}
SUMMARY_CHARS = 40


class SuiteError(SluicewayError):
    """The suite file cannot be read as a Great Expectations expectation suite."""


@dataclass(frozen=True)
class ExpectationReport:
    """What became of one expectation: converted to `check`, or skipped with the reason."""

    index: int
    expectation: str
    outcome: Outcome
    check: str | None
    detail: str


@dataclass
class Conversion:
    """The converted checks, in suite order, and one report row per expectation."""

    suite: str
    checks: list[CheckConfig] = field(default_factory=list)
    reports: list[ExpectationReport] = field(default_factory=list)

    @property
    def skipped(self) -> list[ExpectationReport]:
        """The expectations left out."""
        return [r for r in self.reports if r.outcome == "skipped"]

    def to_yaml(self) -> str:
        """The checks file `{version: 1, checks: [...]}`, with the skipped ones as comments."""
        lines = [f"# Converted from the Great Expectations suite '{_one_line(self.suite)}'."]
        lines += [
            f"# Not converted: #{r.index} {r.expectation}: {_one_line(r.detail)}"
            for r in self.skipped
        ]
        document = {"version": 1, "checks": [_check_data(c) for c in self.checks]}
        body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        return "\n".join(lines) + "\n" + body


def read_suite(path: Path) -> Mapping[str, Any]:
    """The suite JSON of `path` as a mapping.

    Raises:
        SuiteError: the file is missing, not UTF-8 JSON, or not an expectation suite.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SuiteError(f"cannot read '{path}': {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        raise SuiteError(f"'{path}' is not UTF-8 text: export the suite as JSON.") from exc
    except json.JSONDecodeError as exc:
        raise SuiteError(
            f"'{path}' is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise SuiteError(
            f"'{path}' is not a Great Expectations expectation suite: expected a JSON object "
            "with an 'expectations' list (and 'expectation_suite_name' or 'name')."
        )
    return data


def convert_suite(suite: Mapping[str, Any]) -> Conversion:
    """Convert every expectation of `suite` (0.x or 1.x shape) that has an equivalent.

    Returns:
        The converted checks (each validated by its config model) and a report row per
        expectation, in suite order (`index` counts from 0, as in the suite's list).
    """
    name = suite.get("expectation_suite_name") or suite.get("name") or "unnamed"
    conversion = Conversion(suite=str(name))
    targets = ge_targets()
    for index, expectation in enumerate(suite["expectations"]):
        check, report = _convert(index, expectation, targets)
        conversion.reports.append(report)
        if check is not None:
            conversion.checks.append(check)
    return conversion


def ge_targets() -> dict[str, Plugin]:
    """GE expectation type → the registered check that answers to it."""
    targets: dict[str, Plugin] = {}
    for plugin in registry.canonical("check"):
        ge_name = getattr(plugin.config, "ge_name", None)
        for alias in {*plugin.aliases, *([ge_name] if ge_name else [])}:
            if alias.startswith("expect_"):
                targets[alias] = plugin
    return targets


def _convert(
    index: int, expectation: Any, targets: Mapping[str, Plugin]
) -> tuple[CheckConfig | None, ExpectationReport]:
    if not isinstance(expectation, dict):
        return None, _skip(index, "?", f"not an expectation object: {_summary(expectation)}")
    ge_type = str(expectation.get("expectation_type") or expectation.get("type") or "?")
    kwargs = expectation.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        return None, _skip(index, ge_type, f"kwargs is not an object: {_summary(kwargs)}")
    plugin, kwargs = _target(ge_type, kwargs, targets)
    if plugin is None:
        return None, _skip(index, ge_type, f"no equivalent check; kwargs: {_kwargs(kwargs)}")
    try:
        check = _validated(plugin.config, ge_type, kwargs, expectation.get("severity"))
    except _NotCarried as exc:
        return None, _skip(index, ge_type, str(exc))
    detail = _kwargs(kwargs)
    if plugin.name in COUNTED_OTHERWISE and kwargs.get("mostly") is not None:
        detail += f"; NOTE: {COUNTED_OTHERWISE[plugin.name]}"
    return check, ExpectationReport(index, ge_type, "converted", plugin.name, detail)


class _NotCarried(Exception):
    """An expectation whose meaning the check cannot carry; the message says why."""


def _target(
    ge_type: str, kwargs: Kwargs, targets: Mapping[str, Plugin]
) -> tuple[Plugin | None, Kwargs]:
    if ge_type in targets:
        return targets[ge_type], kwargs
    derived = DERIVED.get(ge_type)
    plugin = registry.lookup("check", derived[0]) if derived else None
    if derived is None or plugin is None:
        return None, kwargs
    return plugin, derived[1](kwargs)


def _validated(model: type[BaseModel], ge_type: str, kwargs: Kwargs, severity: Any) -> CheckConfig:
    carried = _carried_kwargs(model, ge_type, kwargs)
    if severity is not None:
        if severity not in SEVERITIES:
            raise _NotCarried(
                f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}"
            )
        carried["severity"] = SEVERITIES[severity]
    rewrite = REWRITES.get(getattr(model, "key", ""))
    if rewrite is not None:
        carried = rewrite(carried)
    try:
        config = model.model_validate(carried)
    except ValidationError as exc:
        raise _NotCarried(f"invalid for '{getattr(model, 'key', '?')}': {_errors(exc)}") from exc
    assert isinstance(config, CheckConfig)
    return config


def _carried_kwargs(model: type[BaseModel], ge_type: str, kwargs: Kwargs) -> Kwargs:
    """The kwargs the check takes; raises naming the ones that change the meaning."""
    accepted = set(model.model_fields) | {
        f.alias for f in model.model_fields.values() if f.alias is not None
    }
    carried, lost = {}, []
    for name, value in kwargs.items():
        if name in IGNORED_KWARGS or value is None or _is_neutral(name, value):
            continue
        if name in accepted and name not in {"name", "severity", "on_fail"}:
            carried[name] = value
        else:
            lost.append(f"{name}={_summary(value)}")
    if lost:
        key = getattr(model, "key", "?")
        raise _NotCarried(
            f"kwarg(s) with no equivalent in '{key}': {', '.join(lost)}; "
            f"rewrite the check by hand if the rest of {ge_type} is what you need"
        )
    return carried


def _is_neutral(name: str, value: Any) -> bool:
    neutral = NEUTRAL_VALUES.get(name, frozenset())
    return isinstance(value, str | bool) and value in neutral


def full_match_regex(pattern: str) -> str:
    """A GE regex (a match anywhere in the value) as a whole-value regex.

    The pattern is wrapped, not edited: `[\\s\\S]*` on each side matches anything, newlines
    included, and the pattern's own `^`, `$` and alternations keep their meaning
    (`^N/A$|@` still accepts `bob@x.com`).
    """
    return f"[\\s\\S]*(?:{pattern})[\\s\\S]*"


def _regex_rewrite(kwargs: Kwargs) -> Kwargs:
    if isinstance(kwargs.get("regex"), str):
        return {**kwargs, "regex": full_match_regex(kwargs["regex"])}
    return kwargs


def _row_count_equal(kwargs: Kwargs) -> Kwargs:
    rest = {k: v for k, v in kwargs.items() if k != "value"}
    return {**rest, "min_value": kwargs.get("value"), "max_value": kwargs.get("value")}


def _column_exists(kwargs: Kwargs) -> Kwargs:
    rest = {k: v for k, v in kwargs.items() if k != "column"}
    return {**rest, "column_set": [kwargs.get("column")], "exact_match": False}


# check key → how its unexpected count differs from GE's, said where `mostly` makes it matter.
COUNTED_OTHERWISE = {
    key: "sluiceway counts each repeat beyond a value's first occurrence as unexpected, GE "
    "counts every row of a repeated value (5 ids twice: 5 against 10), so with `mostly` the "
    "verdicts can differ; lower `mostly` accordingly"
    for key in ("unique", "compound_unique")
}
# check key → how GE arguments become its arguments, where GE means something else by them.
REWRITES: dict[str, Callable[[Kwargs], Kwargs]] = {
    "regex": _regex_rewrite,
    "not_regex": _regex_rewrite,
}
# GE expectation type with no alias → (check key, how its kwargs become that check's).
DERIVED: dict[str, tuple[str, Callable[[Kwargs], Kwargs]]] = {
    "expect_table_row_count_to_equal": ("row_count_between", _row_count_equal),
    "expect_column_to_exist": ("columns_match_set", _column_exists),
}


def _check_data(config: CheckConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    shorthand = getattr(config, "shorthand", None)
    if shorthand is not None and set(data) == {shorthand}:
        return {config.key: data[shorthand]}
    return {config.key: data}


def _skip(index: int, ge_type: str, detail: str) -> ExpectationReport:
    return ExpectationReport(index, ge_type, "skipped", None, detail)


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _kwargs(kwargs: Kwargs) -> str:
    """`name=value, ...`, each value capped, GE-only bookkeeping left out."""
    shown = [f"{k}={_summary(v)}" for k, v in kwargs.items() if k not in IGNORED_KWARGS]
    return ", ".join(shown) or "(none)"


def _summary(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())
