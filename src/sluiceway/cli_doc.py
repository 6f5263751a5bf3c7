"""Placeholder; replaced by the module's implementation."""

import click


@click.command("doc")
def doc() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
