"""The GPU kernel of the mixture quantizer (triton_mixture.py, Triton), as one autograd op.

``mix_fake_quantize(W, r, g, bits)`` = espnet_mpq.core.fused.fused_mix_fake_quantize(W, r, g, bits)
in values and gradients (to float rounding; one candidate with g = [1] bit-identical to
``primitives.fake_quantize``), for raw learned scales r: the positive scale and its gradient, the
LSQ factor and the mixture are all in the two kernels. A weight then costs the host one kernel
launch forward and one launch plus one sum backward, where the broadcast strategy dispatches
about 50 operators (bench/op_count.py): on a GPU the quantizer's cost is that dispatch
(RESULTS.md).

Switch: ESPNET_MPQ_TRITON=1 turns it on for CUDA tensors (float32, contiguous), 0 or unset leaves
the broadcast (any other value is refused with a ValueError). It is off by default until its GPU
timings are measured (bench/device_check.sh). Without triton (``import triton`` fails) the
broadcast runs, with one warning. With TRITON_INTERPRET=1 (Triton's interpreter; it must be set
before the process first imports triton, else the first call raises RuntimeError) it also takes
CPU tensors: that is how the tests check it on a machine without a GPU.
Every candidate is computed (no dead-candidate skip: it would read g on the host).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading

import torch

from espnet_mpq.core.primitives import SCALE_EPS, qmax
from espnet_mpq.core.switches import env_switch

MAX_CANDIDATES = 8  # bit-widths 1..8 are distinct: a candidate set has at most 8
TILE_ELEMENTS = 2048  # NP x BLOCK_N per program and chunk (4096 spilled a few registers: bench/triton_compile.py)

_lock = threading.Lock()
_state: dict[str, object] = {}
forward_calls = 0  # forward launches in this process (benchmarks check that the kernel really ran)
_TABLES: dict[tuple, torch.Tensor] = {}


def enabled() -> bool:
    """ESPNET_MPQ_TRITON: 1 on, 0 or unset off; anything else is refused by name."""
    return env_switch("ESPNET_MPQ_TRITON", "0", off="the broadcast", on="the Triton kernel")


def kernels():
    """The loaded kernel module, or None (triton missing; warned once)."""
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    with _lock:
        if _state.get("interpret") != interpret:  # triton.jit decides at import whether it interprets
            try:
                module = importlib.import_module("espnet_mpq.core.triton_mixture")
                if "interpret" in _state:
                    module = importlib.reload(module)
                if interpret and type(module.tl.sum).__name__ != "InterpretedFunction":
                    raise RuntimeError("TRITON_INTERPRET=1 was set after triton was imported in this process: "
                                       "Triton's interpreter needs it set before the first import of triton")
                logging.info("espnet_mpq: the quantizer runs the Triton kernel%s",
                             " (interpreted: TRITON_INTERPRET=1)" if interpret else "")
            except ImportError as err:
                logging.warning("espnet_mpq: cannot load the Triton kernel (%s): the quantizer uses its broadcast", err)
                module = None
            _state["interpret"], _state["module"] = interpret, module
        return _state["module"]


def usable(bits: tuple[int, ...], *tensors: torch.Tensor) -> bool:
    """Whether the kernel takes this call: on, at most MAX_CANDIDATES, float32 contiguous tensors on
    a CUDA device (or on the CPU under TRITON_INTERPRET=1), and triton loadable."""
    if not enabled() or len(bits) > MAX_CANDIDATES:
        return False
    device = "cpu" if os.environ.get("TRITON_INTERPRET", "0") == "1" else "cuda"
    if not all(t.device.type == device and t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
        return False
    return kernels() is not None


def _table(bits: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(2, n) float32 on ``device``: q_i, then 1.0 for 1-bit candidates; built once per device and set."""
    key = (bits, device)
    if key not in _TABLES:
        _TABLES[key] = torch.tensor([[float(qmax(b)) for b in bits], [float(b == 1) for b in bits]]).to(device)
    return _TABLES[key]


def _on_device_of(t: torch.Tensor):
    """The CUDA device context of ``t`` where it is not the current device (Triton launches on the
    current one; ESPnet's ranks set theirs, so this is normally a no-op)."""
    if t.device.type == "cuda" and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _launch_shape(n: int, columns: int) -> tuple[int, int]:
    """(NP, BLOCK_N): candidates padded to a power of two, columns per chunk within TILE_ELEMENTS."""
    padded = 1 << (n - 1).bit_length()
    block = min(1 << max(columns - 1, 1).bit_length(), TILE_ELEMENTS // padded)
    return padded, max(block, 16)


class _TritonMixFakeQuantize(torch.autograd.Function):
    """W, raw scales r (n, C), g (n,), bits -> W_eff; see the module docstring. The kernels read W
    (C_out, ...) as (C_out, N) through its data pointer: no view or reshape is dispatched."""

    @staticmethod
    def forward(ctx, weight, scales, mixture, bits):
        global forward_calls
        forward_calls += 1
        module = kernels()
        rows = weight.shape[0]
        columns = weight.numel() // rows
        padded, block = _launch_shape(len(bits), columns)
        out = torch.empty_like(weight)
        with _on_device_of(weight):
            module.mixture_forward[(rows,)](weight, scales, mixture, _table(bits, weight.device), out, rows, columns,
                                            NUM=len(bits), NP=padded, BLOCK_N=block, EPS=SCALE_EPS)
        ctx.save_for_backward(weight, scales, mixture)
        ctx.bits = bits
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weight, scales, mixture = ctx.saved_tensors
        bits, module = ctx.bits, kernels()
        rows = weight.shape[0]
        columns = weight.numel() // rows
        padded, block = _launch_shape(len(bits), columns)
        grad = grad_out if grad_out.is_contiguous() else grad_out.contiguous()
        grad_w, grad_s, partial_g = torch.empty_like(weight), torch.empty_like(scales), torch.empty_like(scales)
        with _on_device_of(weight):
            module.mixture_backward[(rows,)](grad, weight, scales, mixture, _table(bits, weight.device), grad_w,
                                             grad_s, partial_g, rows, columns, NUM=len(bits), NP=padded,
                                             BLOCK_N=block, EPS=SCALE_EPS)
        return grad_w, grad_s, partial_g.sum(1), None


def mix_fake_quantize(weight: torch.Tensor, scales: torch.Tensor, mixture: torch.Tensor,
                      bits: tuple[int, ...]) -> torch.Tensor:
    """W_eff = sum_i g_i Q_{b_i}(W) for W (C_out, ...), raw scales (n, C_out), g (n,); call only where
    ``usable(bits, weight, scales, mixture)``."""
    return _TritonMixFakeQuantize.apply(weight, scales, mixture, tuple(bits))
