"""5. write — one module per sink `type:`, and the dead-letter table."""
