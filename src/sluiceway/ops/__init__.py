"""Table and data operations: tiering, cost, retention, erasure, the audit log."""
