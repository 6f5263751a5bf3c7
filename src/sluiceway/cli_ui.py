"""Placeholder; replaced by the module's implementation."""

import click


@click.command("ui")
def ui() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
