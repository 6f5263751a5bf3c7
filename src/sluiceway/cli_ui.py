"""`sluice ui`: the web dashboard on the run store and the project's specs."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sluiceway.core.loader import load_project
from sluiceway.core.project import find_project_file
from sluiceway.core.store_db import resolve_location
from sluiceway.errors import SluicewayError
from sluiceway.ui.catalog import SpecCatalog
from sluiceway.ui.data import StoreReader
from sluiceway.ui.pages import Dashboard
from sluiceway.ui.server import UiServer, new_form_token


def _cli() -> Any:
    from sluiceway import cli

    return cli


def build_dashboard(
    project_file: Path | None, specs: tuple[str, ...], state_dir: str | None
) -> Dashboard:
    """The dashboard's inputs: the project's specs plus `specs`, and the state folder
    (`state_dir`, else the project's `state_dir`, else $SLUICE_HOME, else ./.sluice: the
    folder `sluice run` records the project's runs in).

    Raises:
        SpecError: the project file is invalid.
    """
    paths = [Path(s).resolve() for s in specs]
    root = Path.cwd()
    state: Path | None = None
    run_store: str | None = None
    discover: Callable[[], list[Path]] | None = None
    if project_file is not None:
        project = load_project(project_file)
        root = project_file.resolve().parent
        state = root / project.state_dir
        run_store = project.run_store
        discover = functools.partial(project.spec_paths, root)

    if state_dir or state is None:
        state = _cli()._state_dir(state_dir)
    state = state.resolve()
    return Dashboard(
        reader=StoreReader(resolve_location(state, run_store=run_store, root=root)),
        catalog=SpecCatalog(paths, root, discover=discover),
        state_dir=state,
        form_token=new_form_token(),
    )


@click.command("ui")
@click.option(
    "--project",
    "project_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The project file (default: the nearest sluice.yaml).",
)
@click.option(
    "--spec",
    "specs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A spec to show besides the project's (repeatable).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, help="TCP port (0: any free port).")
@click.option(
    "--state-dir",
    help="Where runs are recorded (default: the project's state_dir, else $SLUICE_HOME or "
    "./.sluice).",
)
def ui(
    project_file: Path | None,
    specs: tuple[str, ...],
    host: str,
    port: int,
    state_dir: str | None,
) -> None:
    """Serve the dashboard: pipelines, runs, dead letters and replay, lineage, catalog.

    Beyond 127.0.0.1 it needs SLUICE_UI_TOKEN; it never shows PII in clear or secrets.
    """
    cli = _cli()
    if project_file is None and not specs:
        project_file = find_project_file()
    try:
        app = build_dashboard(project_file, specs, state_dir)
        server = UiServer(app, host, port, os.environ.get("SLUICE_UI_TOKEN"))
    except SluicewayError as exc:
        cli._fail(str(exc))
    except OSError as exc:
        cli._fail(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port")
    shown = f"[{host}]" if ":" in host else host
    cli.console.print(
        f"sluice ui: http://{shown}:{server.server_port}/ "
        f"({len(app.catalog.specs())} spec(s), runs in {app.reader.location.label}); "
        "Ctrl-C stops it",
        soft_wrap=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
