"""Placeholder; replaced by the module's implementation."""

import click


@click.command("tier")
def tier() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")


@click.command("cost")
def cost() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
