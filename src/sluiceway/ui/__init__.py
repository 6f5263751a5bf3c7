"""The `sluice ui` web dashboard: server, pages, read-only data access."""
