"""How the entry points refuse: one ``error: ...`` line on stderr and exit status 1, no traceback.

The package signals bad input with ValueError (PackedFileError is one) or
FileNotFoundError, each message naming the bad value or file and what is allowed.
``run(main)`` turns those into the one line; any other exception is a bug and keeps
its traceback. Set ESPNET_MPQ_TRACEBACK=1 to see the traceback of a refusal too.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import yaml

EXIT_REFUSED = 1
REFUSALS = (ValueError, FileNotFoundError, yaml.YAMLError)

__all__ = ["EXIT_REFUSED", "REFUSALS", "run"]


def run(main: Callable[..., None], *args, **kwargs) -> None:
    """Call ``main``; a refusal becomes ``error: <message>`` on stderr and SystemExit(1)."""
    try:
        main(*args, **kwargs)
    except REFUSALS as error:
        if os.environ.get("ESPNET_MPQ_TRACEBACK"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
