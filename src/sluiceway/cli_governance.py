"""Placeholder; replaced by the module's implementation."""

import click


@click.command("retention")
def retention() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")


@click.command("forget")
def forget() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")


@click.command("audit")
def audit() -> None:
    """Not built yet."""
    raise click.ClickException("not built yet")
