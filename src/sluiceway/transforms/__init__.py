"""3. shape — the steps: sql, dedup, select / rename / cast, filter, python."""
