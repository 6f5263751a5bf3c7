"""`sluice doc SPEC`: the Data Pipeline Specification of a spec, as Markdown or as one
self-contained HTML page (see docs/doc.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sluiceway.cli import _fail
from sluiceway.errors import SluicewayError, SpecError
from sluiceway.gates.doc import build_document, render_markdown
from sluiceway.gates.doc_html import render_html
from sluiceway.ops.pricing import load_prices


def _cli() -> Any:
    from sluiceway import cli

    return cli


def render_spec(spec: str | Path, *, is_html: bool = False, prices: str | None = None) -> str:
    """Load the spec at `spec` and render its specification document.

    Args:
        spec: path of the YAML spec.
        is_html: render the HTML page instead of Markdown.
        prices: a YAML or JSON price table overriding the defaults (the spec's
            `cost.prices` still win).

    Returns:
        The Markdown or HTML text.

    Unset `${ENV}` references do not stop the document: they are shown as written.

    Raises:
        SpecError: the spec does not load.
        ConfigError: the price table cannot be read or names an unknown price.
    """
    from sluiceway.gates.review import load_for_review, read_raw

    pipeline, _ = load_for_review(spec)
    document = build_document(pipeline, prices=load_prices(pipeline, prices), raw=read_raw(spec))
    return render_html(document) if is_html else render_markdown(document)


@click.command("doc")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.option("--html", "is_html", is_flag=True, help="A self-contained HTML page, not Markdown.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the document to this file instead of stdout.",
)
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML or JSON price table overriding the defaults (the spec's cost.prices win).",
)
def doc(spec: str, is_html: bool, output: str | None, prices: str | None) -> None:
    """Render the Data Pipeline Specification of SPEC: purpose, sources, SLA, architecture,
    stack, quality checks, partitioning, monthly cost estimate, risks."""
    try:
        text = render_spec(spec, is_html=is_html, prices=prices)
    except SpecError as exc:
        _cli()._print_problems(spec, exc)
        sys.exit(2)
    except SluicewayError as exc:
        _fail(exc.message)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"Could not write {output}: {exc.strerror}. Choose a writable --output path.")
    kind = "HTML" if is_html else "Markdown"
    _cli().console.print(
        f"Wrote the {kind} specification of {spec} to {output}", markup=False, soft_wrap=True
    )
