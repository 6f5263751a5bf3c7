"""Placeholder; replaced by the module's implementation."""

import click


@click.command("scheduler")
def scheduler() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
