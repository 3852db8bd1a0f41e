"""Quiet, lazy access to jaxmarl.

Importing jaxmarl takes seconds, prints a banner to stdout, and (through its MABrax module)
rebinds ``sys.stdout`` / ``sys.stderr`` to ``sys.__stdout__`` / ``sys.__stderr__``, which
would silently undo any redirection in place (pytest capture, progress bars, log tees).
So it is imported only when an environment needs it, with file descriptor 1 pointed at
/dev/null for the duration and the Python stream objects restored afterwards.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from types import ModuleType


@functools.cache
def jaxmarl_module(name: str) -> ModuleType:
    """Import ``jaxmarl.<name>`` once, without its banner and without losing sys.stdout/stderr."""
    saved_streams = sys.stdout, sys.stderr
    saved_fd = None
    try:
        sys.stdout.flush()
        saved_fd = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no usable fd 1 (e.g. some notebooks)
        saved_fd = None
    try:
        return importlib.import_module(f"jaxmarl.{name}")
    finally:
        if saved_fd is not None:
            try:
                sys.__stdout__.flush()
            except (OSError, ValueError, AttributeError):
                pass
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
        sys.stdout, sys.stderr = saved_streams
