"""On/off environment switches of the quantizer's kernels (ESPNET_MPQ_NATIVE, ESPNET_MPQ_TRITON)."""
from __future__ import annotations

import os


def env_switch(name: str, default: str, off: str, on: str) -> bool:
    """os.environ[name] (``default`` when unset) as a bool: "1" True, "0" False.

    Any other value raises ValueError naming the variable, its value and what 0 and 1 mean
    (``off`` and ``on``), e.g. "ESPNET_MPQ_NATIVE='yes': must be 0 (the eager CPU loop) or 1 (the C kernel)".
    """
    value = os.environ.get(name, default)
    if value not in ("0", "1"):
        raise ValueError(f"{name}={value!r}: must be 0 ({off}) or 1 ({on})")
    return value == "1"
