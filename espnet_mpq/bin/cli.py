"""How the entry points refuse: one ``error: ...`` line on stderr and exit status 1, no traceback.

The package signals bad input with ValueError (PackedFileError is one) or
FileNotFoundError, each message naming the bad value or file and what is allowed.
``run(main)`` turns those into the one line, and so torch's load_state_dict error
(a model file of another model; shortened); any other exception is a bug and keeps
its traceback. Set ESPNET_MPQ_TRACEBACK=1 to see the traceback of a refusal too.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

import yaml

EXIT_REFUSED = 1
REFUSALS = (ValueError, FileNotFoundError, yaml.YAMLError)
STATE_DICT_MISMATCH = "Error(s) in loading state_dict"
MAX_DETAIL = 300  # characters of torch's (long) list of mismatched keys

__all__ = ["EXIT_REFUSED", "REFUSALS", "run"]


def run(main: Callable[..., None], *args, **kwargs) -> None:
    """Call ``main``; a refusal becomes ``error: <message>`` on stderr and SystemExit(1)."""
    try:
        main(*args, **kwargs)
    except REFUSALS as error:
        refuse(error, str(error))
    except RuntimeError as error:  # torch's load_state_dict: a model file that does not fit the config
        if not str(error).startswith(STATE_DICT_MISMATCH):
            raise
        refuse(error, f"the model file does not fit the model its config builds: {str(error)[:MAX_DETAIL]}")


def refuse(error: BaseException, message: str) -> None:
    if os.environ.get("ESPNET_MPQ_TRACEBACK"):
        raise error
    message = " ".join(message.split()) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_REFUSED) from None
