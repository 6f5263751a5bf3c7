"""The readiness half of the pre-flight review: is everything a production pipeline must
state actually stated? Source inventory, service levels, quality standard, compliance, cost.

Every check returns its findings; a check that found nothing wrong returns one pass finding
saying what it verified. Reasons name the YAML path and the value, never a secret's value.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sluiceway.core.spec import ColumnContract, Pipeline
from sluiceway.core.spec_meta import parse_volume
from sluiceway.gates.findings import Finding
from sluiceway.gates.inventory import finding, missing, source_inventory

SLA_KEYS = ("latency", "freshness", "availability")
QUALITY_KEYS = ("completeness", "pass_rate")
_SLA_EXAMPLE = {"latency": "30m", "freshness": "1d", "availability": "99.9%"}
_QUALITY_EXAMPLE = {"completeness": 0.99, "pass_rate": 0.995}
_PERSON_WORDS = ("user", "customer", "person", "member", "account", "client", "subject")
PII_FORMATS = {"email": "hmac", "ip": "truncate_ip", "ipv4": "truncate_ip", "ipv6": "truncate_ip"}

# Words and word pairs of column names that identify a person (matched on snake_case words).
_PII_WORD_LIST = (
    "email e_mail phone mobile telephone msisdn ssn ip ipv4 ipv6 street zipcode postcode dob "
    "birthdate birthday passport iban surname firstname lastname fullname imei latitude longitude"
)
_PII_PAIR_LIST = (
    "first_name last_name full_name birth_date date_birth credit_card card_number tax_id "
    "social_security national_id customer_name zip_code postal_code user_name contact_name "
    "home_address"
)
_PII_WORDS = frozenset(_PII_WORD_LIST.split())
_PII_PAIRS = frozenset(tuple(pair.split("_")) for pair in _PII_PAIR_LIST.split())


def verdict(
    check: str, problems: list[Finding], passed: str, make: Callable[..., Finding] = finding
) -> list[Finding]:
    """`problems`, or one pass finding saying what was verified when there are none."""
    return problems or [make(check, "pass", passed)]


def readiness_findings(pipeline: Pipeline, raw: Mapping[str, Any] | None) -> list[Finding]:
    """The findings of the five readiness checks, in `READINESS_CHECKS` order."""
    return [
        *source_inventory(pipeline, raw),
        *sla(pipeline),
        *quality_standards(pipeline),
        *compliance(pipeline),
        *cost(pipeline),
    ]


def sla(pipeline: Pipeline) -> list[Finding]:
    """`sla` states latency, freshness and availability."""
    check = "sla"
    example = "sla: {latency: 30m, freshness: 1d, availability: 99.9%}"
    if pipeline.sla is None:
        return [finding(check, "fail", "the spec has no sla", f"add {example}", "sla")]
    absent = missing(pipeline.sla, SLA_KEYS)
    if absent:
        return [
            finding(
                check,
                "warn",
                f"sla is missing {', '.join(absent)}",
                "add to sla: {" + ", ".join(f"{k}: {_SLA_EXAMPLE[k]}" for k in absent) + "}",
                "sla",
            )
        ]
    s = pipeline.sla
    return [
        finding(
            check,
            "pass",
            f"sla: latency {s.latency}, freshness {s.freshness}, availability {s.availability}",
        )
    ]


def quality_standards(pipeline: Pipeline) -> list[Finding]:
    """`quality` states completeness and pass_rate, and every source has a contract."""
    check = "quality standards"
    example = "quality: {completeness: 0.99, pass_rate: 0.995}"
    problems: list[Finding] = []
    if pipeline.quality is None:
        problems.append(
            finding(check, "fail", "the spec has no quality", f"add {example}", "quality")
        )
    elif absent := missing(pipeline.quality, QUALITY_KEYS):
        problems.append(
            finding(
                check,
                "warn",
                f"quality is missing {', '.join(absent)}",
                "add to quality: {"
                + ", ".join(f"{k}: {_QUALITY_EXAMPLE[k]}" for k in absent)
                + "}",
                "quality",
            )
        )
    if bare := sources_without_contract(pipeline):
        problems.append(contract_missing(check, bare, finding))
    q = pipeline.quality
    return verdict(
        check,
        problems,
        f"quality: completeness {q.completeness if q else None}, pass_rate "
        f"{q.pass_rate if q else None}; every source has a contract",
    )


def sources_without_contract(pipeline: Pipeline) -> list[str]:
    """Names of the sources that declare no contract."""
    return [name for name, source in pipeline.sources.items() if source.contract is None]


def contract_missing(check: str, names: list[str], make: Callable[..., Finding]) -> Finding:
    """The fail finding for sources without a contract."""
    return make(
        check,
        "fail",
        f"source(s) without a contract: {', '.join(names)}",
        f"add sources.{names[0]}.contract: {{columns: {{id: {{type: string, nullable: false}}}}, "
        "on_violation: dead_letter} (`sluice suggest` drafts one from data)",
        f"sources.{names[0]}.contract",
    )


def contract_columns(pipeline: Pipeline) -> Iterator[tuple[str, str, ColumnContract]]:
    """(source, column, rules) of every contract column."""
    for name, source in pipeline.sources.items():
        if source.contract is not None:
            for column, rules in source.contract.columns.items():
                yield name, column, rules


def looks_like_pii(column: str, rules: ColumnContract) -> bool:
    """A column whose name or format says it identifies a person (email, ip, phone, ...)."""
    if rules.format in PII_FORMATS:
        return True
    if rules.type == "boolean":
        return False
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", spaced) if w]
    if set(words) & _PII_WORDS or "_".join(words) in _PII_WORDS:
        return True
    return any(pair in _PII_PAIRS for pair in itertools.pairwise(words))


def undeclared_pii(pipeline: Pipeline) -> list[tuple[str, str, ColumnContract]]:
    """PII-looking contract columns that `pii:` does not mask."""
    declared = {name.casefold() for name in pipeline.pii}
    return [
        (source, column, rules)
        for source, column, rules in contract_columns(pipeline)
        if looks_like_pii(column, rules) and column.casefold() not in declared
    ]


def compliance(pipeline: Pipeline) -> list[Finding]:
    """PII is declared, retention is stated, data subjects can be found, audit stays on."""
    check = "compliance"
    problems: list[Finding] = []
    if leaks := undeclared_pii(pipeline):
        # The fix is the whole pii mapping: written as is, it keeps what is declared already.
        methods = {str(c): str(m) for c, m in pipeline.pii.items()}
        methods |= {c: PII_FORMATS.get(r.format or "", "hash") for _, c, r in leaks}
        problems.append(
            finding(
                check,
                "fail",
                "PII-looking column(s) not declared in pii: "
                + ", ".join(f"sources.{s}.contract.columns.{c}" for s, c, _ in leaks),
                "pii: {" + ", ".join(f"{c}: {m}" for c, m in methods.items()) + "}",
                "pii",
            )
        )
    rules = pipeline.compliance
    if rules is None or rules.retention is None:
        problems.append(
            finding(
                check,
                "fail",
                "compliance.retention is not stated: data would be kept forever",
                "add compliance.retention: 400d (`sluice retention` enforces it)",
                "compliance.retention",
            )
        )
    problems += _subject_problems(pipeline, bool(leaks))
    return verdict(
        check,
        problems,
        f"retention {rules.retention if rules else None}; PII declared: "
        f"{', '.join(pipeline.pii) or 'none'}; subject key "
        f"{rules.subject_key if rules else None}",
    )


def _subject_problems(pipeline: Pipeline, has_undeclared: bool) -> list[Finding]:
    check = "compliance"
    rules = pipeline.compliance
    out: list[Finding] = []
    if pipeline.pii and (rules is None or rules.subject_key is None):
        out.append(
            finding(
                check,
                "fail",
                f"the pipeline has PII ({', '.join(pipeline.pii)}) but no compliance.subject_key: "
                "a data subject's rows cannot be found to erase them",
                f"add compliance.subject_key: {subject_column(pipeline)} (the column "
                "identifying a person)",
                "compliance.subject_key",
            )
        )
    if rules is not None and rules.subject_key is not None:
        columns = {c.casefold() for _, c, _ in contract_columns(pipeline)}
        if rules.subject_key.casefold() not in columns:
            out.append(
                finding(
                    check,
                    "warn",
                    f"compliance.subject_key '{rules.subject_key}' is not a contract column of "
                    "any source",
                    "set compliance.subject_key to a contract column, or declare "
                    f"{rules.subject_key} in a source contract",
                    "compliance.subject_key",
                )
            )
    if rules is not None and not rules.audit and (pipeline.pii or has_undeclared):
        out.append(
            finding(
                check,
                "fail",
                "compliance.audit is false on a pipeline with PII: operations on personal data "
                "would go unrecorded",
                "remove compliance.audit: false (or set compliance.audit: true)",
                "compliance.audit",
            )
        )
    return out


def cost(pipeline: Pipeline) -> list[Finding]:
    """`cost` states a monthly budget and yearly growth; every source has a volume."""
    check = "cost"
    targets = pipeline.cost
    problems: list[Finding] = []
    if targets is None or targets.budget_per_month is None:
        problems.append(
            finding(
                check,
                "fail",
                "cost.budget_per_month is not stated",
                "add cost.budget_per_month: 500",
                "cost.budget_per_month",
            )
        )
    if targets is None or targets.growth_per_year is None:
        problems.append(
            finding(
                check,
                "warn",
                "cost.growth_per_year is not stated: no growth projection",
                "add cost.growth_per_year: 1.5 (volume multiplier per year)",
                "cost.growth_per_year",
            )
        )
    if unsized := [
        n for n, s in pipeline.sources.items() if not (s.inventory and s.inventory.volume)
    ]:
        problems.append(
            finding(
                check,
                "warn",
                f"source(s) without inventory.volume: {', '.join(unsized)}; no volume "
                "projection possible",
                f"add sources.{unsized[0]}.inventory.volume: 2M rows/day",
                f"sources.{unsized[0]}.inventory.volume",
            )
        )
    problems += [
        finding(
            check,
            "fail",
            f"sources.{name}.inventory.volume is too large to compute with",
            f"write sources.{name}.inventory.volume as a realistic rate, e.g. 40GB/day",
            f"sources.{name}.inventory.volume",
        )
        for name in unmeasurable_volumes(pipeline)
    ]
    return verdict(
        check,
        problems,
        f"budget {targets.budget_per_month if targets else None} {targets.currency if targets else ''}"
        f"/month, growth x{targets.growth_per_year if targets else None}/year, volumes "
        + ", ".join(f"{n} {volume_of(pipeline, n)}" for n in pipeline.sources),
    )


def volume_of(pipeline: Pipeline, source: str) -> str | None:
    """The declared volume text of `source`, or None."""
    inventory = pipeline.sources[source].inventory
    return inventory.volume if inventory else None


def unmeasurable_volumes(pipeline: Pipeline) -> list[str]:
    """Sources whose declared volume parses to an infinite number of rows or bytes."""
    out = []
    for name, source in pipeline.sources.items():
        if source.inventory is not None and source.inventory.volume is not None:
            volume = parse_volume(source.inventory.volume)
            daily = volume.stored_bytes_per_day(source.inventory.row_bytes)
            if not math.isfinite(daily) or not math.isfinite(volume.rows_per_day or 0.0):
                out.append(name)
    return out


def subject_column(pipeline: Pipeline) -> str:
    """A contract column that likely identifies a person (e.g. user_id), else 'user_id'."""
    for _, column, _ in contract_columns(pipeline):
        words = re.split(r"[^a-z0-9]+", column.lower())
        if words[-1] == "id" and any(word in _PERSON_WORDS for word in words):
            return column
    return "user_id"
