"""Subscribers to run events: structured logs and live progress."""
