"""Placeholder; replaced by the module's implementation."""

import click


@click.command("check")
def check() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
