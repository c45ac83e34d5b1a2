"""The thin ``main`` wrapper every stage shares: one clear line on a known failure."""

from __future__ import annotations

import sys
from collections.abc import Callable

from distill.io import WriteFailed
from distill.params import ParamsError


class StageError(RuntimeError):
    """A failure the user can act on; its message says what was seen and what to change."""


def guarded(stage: str, main: Callable[[], None]) -> None:
    """Run a stage's main; known failures exit 1 with ``<stage>: <message>`` and no traceback, among them an
    output the filesystem refused to write (``WriteFailed``: a full disk, naming the file)."""
    try:
        main()
    except (ParamsError, StageError, FileNotFoundError, WriteFailed) as error:
        print(f"{stage}: {error}", file=sys.stderr)
        sys.exit(1)
