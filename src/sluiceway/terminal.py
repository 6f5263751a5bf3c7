"""The consoles the commands print to.

On a terminal rich follows its width. Piped or redirected output (a log file, CI, `| less`)
has no width; rich would wrap tables at 80 columns and cut names and numbers, so it gets a
wide one instead, unless COLUMNS says otherwise.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

PIPED_WIDTH = 200


def new_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that does not wrap piped output at 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, highlight=False, width=PIPED_WIDTH if piped else None)
