"""1. read — one module per source `type:`."""
