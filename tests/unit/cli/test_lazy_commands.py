"""Commands load lazily: each name resolves to the command of that name, and `sluice run`
does not import the modules of the other commands."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from sluiceway.cli import _LAZY_COMMANDS, main


@pytest.mark.parametrize("name", sorted(_LAZY_COMMANDS))
def test_each_lazy_command_resolves_to_the_command_of_that_name(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name


def test_importing_the_cli_does_not_import_the_other_commands_modules() -> None:
    probe = (
        "import sys, sluiceway.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('sluiceway.cli_')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
