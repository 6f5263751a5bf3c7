"""Checks: what the data of a pipeline must satisfy.

`vocabulary` holds the table-check configs (Great Expectations' names plus a short key each);
`table` compiles every table check of a dataset into one fused aggregate query, turns the
aggregates into `CheckResult`s and says which of them block publishing (write–audit–publish).
"""
