"""Connection settings shared by the source and the sink of one system (never a plug-in)."""
