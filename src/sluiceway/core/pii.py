"""PII in a run: the SQL that masks each declared column, the masked-value maps staging
joins, and the guard against PII published under another column name.

Columns match `pii:` names as DuckDB matches names (case-insensitively).
"""

from __future__ import annotations

from sluiceway import masking
from sluiceway.core.context import META_COLUMNS
from sluiceway.core.spec import Pipeline
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import TerminalError

_PER_ROW = frozenset({"redact", "truncate_ip"})
"""Methods masked row by row, never through a map: they cost less per value than a map's
DISTINCT and join (measured: 200,000 mostly distinct IPs, 97 ms per row against 196 ms
through a map)."""
GUARD_SAMPLE_ROWS = 2000
GUARD_MIN_VALUES = 20
_TOKEN_BREAKS = r"[^[:alnum:]@.\-_+]+"
"""Where the guard splits a value into tokens: an e-mail address or an IP stays whole."""


def _tokens_sql(sample: str) -> str:
    """(col, id, t): each sampled value whole, and its tokens, lower case. A token loses the
    `. - _ +` at its ends (the full stop after an address); tokens shorter than 4 characters
    or made of digits only are left out (a list of small numbers would match any numeric
    id), unless they are the whole value. The value itself is not repeated per token."""
    split = f"trim(unnest(regexp_split_to_array(lower(v), {quote_literal(_TOKEN_BREAKS)})), '.-_+')"
    return (
        f"SELECT DISTINCT col, id, t FROM (SELECT col, id, lower(v) AS t FROM {quote_ident(sample)} "
        f"UNION ALL SELECT col, id, t FROM (SELECT col, id, {split} AS t FROM {quote_ident(sample)}) "
        "WHERE length(t) >= 4 AND NOT regexp_full_match(t, '[0-9]+')) WHERE t <> ''"
    )


def _may_hold_text(kind: str) -> bool:
    """A DuckDB type whose values can carry a copied text value."""
    return (
        kind in ("VARCHAR", "JSON")
        or kind.endswith("]")
        or kind.startswith(("STRUCT", "MAP", "UNION"))
    )


class PiiMasking:
    """Masking of one run's PII columns.

    Args:
        pipeline: the spec (its `pii:` map).
        keys: the masking keys.
        engine: the run's engine.
    """

    def __init__(self, pipeline: Pipeline, keys: masking.MaskKeys, engine: DuckDBEngine) -> None:
        self.methods = {name.casefold(): method for name, method in pipeline.pii.items()}
        self.keys = keys
        self.engine = engine

    def method_of(self, column: str) -> str | None:
        """The masking method of `column`, or None when it is not PII."""
        return self.methods.get(column.casefold())

    def masked(self, column: str, *, prefix: str = "") -> str:
        """The SQL of `column`, masked when it is PII."""
        method = self.method_of(column)
        ref = prefix + quote_ident(column)
        return ref if method is None else masking.mask_sql(method, ref, self.keys)

    def payload_sql(self, columns: list[str]) -> str:
        """The SQL of a row's `columns` as a JSON object, PII masked (a dead letter's payload)."""
        if not columns:
            return "'{}'"
        parts = [f"{quote_ident(c)} := {self.masked(c)}" for c in columns]
        return f"to_json(struct_pack({', '.join(parts)}))::VARCHAR"

    def staging_select(
        self, table: str, columns: list[str], source: str | None
    ) -> tuple[str, list[str]]:
        """The SELECT that masks `columns` of `table`, and the map tables it joins (to drop).

        Each PII column with a column of the same name in `source` (the primary source's
        valid rows) is masked, unless its method is cheaper per row (`redact`,
        `truncate_ip`), once per distinct value there (PII repeats: one user, many
        events) and joined; values the map lacks (a step made a new one) are masked row by
        row, so the maps only save work and never decide what is masked.
        """
        maps = self._maps(columns, source)
        select = [self._column(c, maps.get(c), index) for index, c in enumerate(columns)]
        joins = "".join(
            f" LEFT JOIN {quote_ident(m)} AS __sw_m{columns.index(c)} "
            f"ON CAST(t.{quote_ident(c)} AS VARCHAR) = __sw_m{columns.index(c)}.v"
            for c, m in maps.items()
        )
        return f"SELECT {', '.join(select)} FROM {quote_ident(table)} AS t{joins}", list(
            maps.values()
        )

    def _maps(self, columns: list[str], source: str | None) -> dict[str, str]:
        if source is None:
            return {}
        present = {c.casefold(): c for c, _ in self.engine.columns(source)}
        maps: dict[str, str] = {}
        for column in columns:
            method = self.method_of(column)
            if method is None or method in _PER_ROW or column.casefold() not in present:
                continue
            origin = quote_ident(present[column.casefold()])
            maps[column] = self.engine.create_table(
                self.engine.new_name("mask_map"),
                f"SELECT v, {masking.mask_sql(method, 'v', self.keys)} AS m FROM "
                f"(SELECT DISTINCT CAST({origin} AS VARCHAR) AS v FROM {quote_ident(source)} "
                f"WHERE {origin} IS NOT NULL)",
                purpose=f"mask the distinct values of {column}",
            )
        return maps

    def _column(self, column: str, mask_map: str | None, index: int) -> str:
        masked = self.masked(column, prefix="t.")
        if mask_map is None:
            return f"{masked} AS {quote_ident(column)}"
        alias = f"__sw_m{index}"
        return f"CASE WHEN {alias}.m IS NOT NULL THEN {alias}.m ELSE {masked} END AS {quote_ident(column)}"

    def guard_renamed(self, table: str, valid: dict[str, str]) -> None:
        """Fail when a column that will not be masked carries the values of a PII column.

        Masking goes by output column name, so a step that renames, copies or wraps a PII
        column (`email AS contact`, `'mailto:' || email`, `upper(email)`, `[email]`,
        `struct_pack(e := email)`) would publish it in clear. A seeded sample of the
        result's rows is taken; each unmasked text or nested column (lists, structs, maps,
        JSON: read as their text) is split into tokens at spaces and punctuation other than
        `@ . - _ +`, and a column whose sampled values mostly hold a value of a PII column of
        a source as a whole token (case ignored) is refused. Columns with fewer than
        GUARD_MIN_VALUES distinct sampled values are too coarse to tell and are let through.

        Raises:
            TerminalError: naming the columns and how to declare them.
        """
        candidates = [
            c
            for c, kind in self.engine.columns(table)
            if _may_hold_text(kind) and self.method_of(c) is None and c not in META_COLUMNS
        ]
        if not self.methods or not candidates:
            return
        distinct = " UNION ALL ".join(
            f"SELECT DISTINCT {quote_literal(c)} AS col, {quote_ident(c)}::VARCHAR AS v FROM "
            f"(SELECT * FROM {quote_ident(table)} USING SAMPLE reservoir({GUARD_SAMPLE_ROWS} ROWS) "
            f"REPEATABLE (7)) WHERE {quote_ident(c)} IS NOT NULL"
            for c in candidates
        )
        sample = self.engine.create_table(
            self.engine.new_name("pii_probe"),
            f"SELECT col, v, row_number() OVER () AS id FROM ({distinct})",
            purpose="sample the result for PII",
        )
        tokens = self.engine.create_table(
            self.engine.new_name("pii_tokens"), _tokens_sql(sample), purpose="tokens of the sample"
        )
        try:
            totals = dict(
                self.engine.execute(
                    f"SELECT col, count(*) FROM {quote_ident(sample)} GROUP BY col"
                ).fetchall()
            )
            for source, source_table in valid.items():
                for column, _ in self.engine.columns(source_table):
                    if self.method_of(column) is not None:
                        self._refuse_copies(tokens, totals, source, source_table, column)
        finally:
            self.engine.drop(sample, tokens)

    def _refuse_copies(
        self, tokens: str, totals: dict[str, int], source: str, source_table: str, column: str
    ) -> None:
        hits = self.engine.execute(
            f"SELECT col, count(DISTINCT id) FROM {quote_ident(tokens)} s SEMI JOIN "
            f"{quote_ident(source_table)} p ON s.t = lower(p.{quote_ident(column)}::VARCHAR) "
            "GROUP BY col",
            purpose="look for PII under another name",
        ).fetchall()
        leaking = sorted(
            col
            for col, found in hits
            if totals.get(col, 0) >= GUARD_MIN_VALUES and found * 2 >= totals[col]
        )
        if leaking:
            raise TerminalError(
                f"column(s) {', '.join(map(repr, leaking))} of the result carry the values of PII "
                f"column '{column}' (source {source}) but are not masked; nothing was published. "
                f"Declare them under pii: (e.g. pii: {{{leaking[0]}: {self.method_of(column)}}}) "
                "or drop them in a step"
            )
