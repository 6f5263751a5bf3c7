"""Placeholder; replaced by the module's implementation."""

import click


@click.command("lineage")
def lineage() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
