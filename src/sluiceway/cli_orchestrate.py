"""Placeholder; replaced by the module's implementation."""

import click


@click.command("backfill")
def backfill() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
