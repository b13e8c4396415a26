"""The CPU kernel of the mixture quantizer (native_mixture.c), built on first use and loaded with ctypes.

``kernels()`` returns the loaded library, or None when it cannot be had; the caller then uses the
eager candidate loop (espnet_mpq.core.fused), which gives the same values. The library is built once
per source, compiler and CPU with the C compiler found as $CC, else ``cc`` (flags: -O3 -march=native
-fopenmp -ffp-contract=off) into $ESPNET_MPQ_CACHE (default ~/.cache/espnet_mpq), written atomically.
ESPNET_MPQ_NATIVE=0 turns it off (1, or unset, leaves it on; any other value is refused with a
ValueError); an empty ESPNET_MPQ_CACHE counts as unset. A failed build is reported once (logging, warning level) with the
compiler's message, and not tried again in that process. A cached library that does not load is built again.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from espnet_mpq.core.switches import env_switch

SOURCE = Path(__file__).with_name("native_mixture.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]
MAX_CANDIDATES = 16  # as in native_mixture.c

_lock = threading.Lock()
_state: dict[str, object] = {}
_F = ctypes.POINTER(ctypes.c_float)
_I32 = ctypes.POINTER(ctypes.c_int32)
_I64, _INT = ctypes.c_int64, ctypes.c_int


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str) -> Path:
    """The built library's path; builds it (atomically) if this source, compiler and CPU have none."""
    key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, *FLAGS, _cpu_model()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("ESPNET_MPQ_CACHE") or Path.home() / ".cache" / "espnet_mpq")
    lib = cache / f"native_mixture-{key}.so"
    if lib.is_file():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], check=True, capture_output=True, text=True)
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _load(compiler: str) -> ctypes.CDLL:
    """The library, loaded; a cached file that does not load (truncated, or written by something else)
    is removed and built again, once."""
    lib = _build(compiler)
    try:
        return ctypes.CDLL(str(lib))
    except OSError as err:
        logging.warning("espnet_mpq: the cached kernel %s does not load (%s): building it again", lib, err)
        lib.unlink(missing_ok=True)
        return ctypes.CDLL(str(_build(compiler)))


def kernels():
    """The loaded kernel library (ctypes.CDLL), or None (turned off, no compiler, or a failed build)."""
    if not env_switch("ESPNET_MPQ_NATIVE", "1", off="the eager CPU loop", on="the C kernel"):
        return None
    with _lock:
        if "lib" not in _state:
            _state["lib"] = None
            compiler = shutil.which(os.environ.get("CC", "cc"))
            if compiler is None:
                logging.warning("espnet_mpq: no C compiler ($CC or cc): the quantizer uses its eager CPU loop")
                return None
            try:
                lib = _load(compiler)
            except (OSError, subprocess.CalledProcessError) as err:
                detail = getattr(err, "stderr", "") or err
                logging.warning("espnet_mpq: building %s failed, the quantizer uses its eager CPU loop: %s",
                                SOURCE.name, detail)
                return None
            lib.mixture_forward.argtypes = [_F, _F, _F, _I32, _I64, _I64, _I64, _F, _INT]
            lib.mixture_backward.argtypes = [_F, _F, _F, _F, _I32, _I64, _I64, _I64, _F, _F, _F, _INT]
            lib.mixture_forward.restype = lib.mixture_backward.restype = None
            _state["lib"] = lib
        return _state["lib"]


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernel takes these tensors: float32, in CPU memory, contiguous."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def _ptr(t: torch.Tensor, kind=_F):
    return ctypes.cast(t.data_ptr(), kind)


def forward(w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, bits: tuple[int, ...]) -> torch.Tensor:
    """sum_i g_i s_i L_i(w / s_i) for w (R, N), s (n, R), g (n,): the eager ``_forward_loop``'s values."""
    lib = kernels()
    out = torch.empty_like(w)
    b = torch.tensor(bits, dtype=torch.int32)
    lib.mixture_forward(_ptr(w), _ptr(s), _ptr(g), _ptr(b, _I32), len(bits), w.shape[0], w.shape[1], _ptr(out),
                        torch.get_num_threads())
    return out


def backward(grad: torch.Tensor, w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, bits: tuple[int, ...]):
    """(dL/dw (R, N), dL/ds (n, R) before the LSQ factor, dL/dg (n,)): the eager ``_backward_loop``'s results."""
    lib = kernels()
    grad_w, grad_s, grad_g = torch.empty_like(w), torch.empty_like(s), torch.empty_like(g)
    b = torch.tensor(bits, dtype=torch.int32)
    lib.mixture_backward(_ptr(grad), _ptr(w), _ptr(s), _ptr(g), _ptr(b, _I32), len(bits), w.shape[0], w.shape[1],
                         _ptr(grad_w), _ptr(grad_s), _ptr(grad_g), torch.get_num_threads())
    return grad_w, grad_s, grad_g
