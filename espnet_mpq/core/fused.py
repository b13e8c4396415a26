"""The supernet's mixture quantizer as one fused autograd op.

Computes, for a weight W (C_out, ...), candidate bit-widths b_1..b_n with
per-channel scales s_i (n, C_out) and mixture weights g (n,) (symbols of
shared/METHOD.md and ``primitives``):

    W_eff = sum_i g_i * Q_{b_i}(W),   Q_b(W) = s_b * L_b(W / s_b)
    L_b(x) = round(clamp(x, -q_b, q_b))  (b >= 2),   L_1(x) = sign(x), sign(0) = +1

with the scale that is applied being ``primitives.positive_scale(s)``. Values and
gradients are those of ``primitives.mix_fake_quantize`` (straight-through rounding,
LSQ scale gradient); the backward pass is written out:

    m_i      = 1[|W / s_i| <= q_i]                                    (clip range, elementwise)
    dL/dW    = dOut * sum_i g_i m_i                                   (STE)
    dL/ds_ic = g_i / sqrt(N q_i) * sum_j dOut_cj (L_i(x_cj) - m_icj x_cj),  x = W / s_i   (LSQ)
    dL/dg_i  = sum(dOut * Q_{b_i}(W))

(N = elements per output channel). Nothing per candidate is kept for the backward
pass: it recomputes L_i and m_i from W, s and g. Three strategies give the same
values and gradients (to float rounding; one candidate's values to the bit):

- C kernel (default on the CPU, float32): espnet_mpq.core.native, one pass over
  W per call, rows shared among torch's number of threads, every candidate of a
  row while the row is in cache; built on first use with the machine's C compiler. Where it
  cannot be built (no compiler; ESPNET_MPQ_NATIVE=0) the candidate loop runs.
- candidate loop (the CPU fallback): in place in a few block-sized buffers
  reused by every candidate; about 12 operators per candidate, block and step,
  each a pass over the block.
- broadcast (default on accelerators): all candidates in one (n, C_out, N) pass,
  a fixed number of operators (about 40 per step) whatever n is, at the price of
  n-times larger temporaries. On a GPU the cost of a step is the host's
  dispatching of small operators (about 14 us each on an H200; RESULTS.md), not
  the memory traffic. Its kernel, with ESPNET_MPQ_TRITON=1 on a CUDA GPU:
  espnet_mpq.core.triton_kernel, one Triton launch forward and one backward
  (off by default until measured on a GPU).

The work runs over blocks of output channels whose temporaries have at most
LOOP_BLOCK_ELEMENTS / BROADCAST_BLOCK_ELEMENTS elements; each block writes its rows
of W_eff and dL/dW in place. The loop keeps its scratch buffers from call to call
(new weight-sized buffers in every call cost page faults on the CPU).
With ``compile=True`` the same functions run through torch.compile (inductor) over
the whole weight: one fused loop forward, one backward.

Dead candidates: a candidate whose mixture weight g_i is below ``dead_threshold``
(default DEAD_CANDIDATE_THRESHOLD) is left out of that call, forward and backward;
it then costs nothing and gets no gradient (dL/dg_i = 0, dL/ds_i = 0). The bias is
bounded by the threshold t, per skipped candidate i:

    |W_eff - W_eff exact| <= t * max|Q_{b_i}(W)|       (elementwise)
    |dL/dW error|         <= t * |dOut|                (elementwise)
    |dL/dg_i error|       =  |sum(dOut * Q_{b_i}(W))|, entering the Gumbel-Softmax
                             logit gradient multiplied by g_i / tau <= t / tau

The skip test reads g on the host, so it runs only where g lives in CPU memory:
on an accelerator it would synchronise the device once per layer and step, and
every candidate is computed there (as with ``dead_threshold=0``, or ``compile``,
whose kernels are compiled once per candidate set and so always take all of them).
"""
from __future__ import annotations

import math
import threading

import torch

from espnet_mpq.core import native, triton_kernel
from espnet_mpq.core.primitives import positive_scale, qmax

# g_i below this skips candidate i (see the module docstring for the bias it causes).
DEAD_CANDIDATE_THRESHOLD = 1e-4
# Elements per temporary buffer, at most, for one block of output channels: (R, N) in the
# candidate loop (512 K floats = 2 MB, so its four kept scratch buffers hold 8 MB; blocks from
# 4 M down to 512 K elements gave about the same step time on the project's 2-core CPU, smaller ones
# cost per-operation overhead: bench/quantizer_block.py, RESULTS.md), (n, R, N) in the broadcast
# (16 M floats = 64 MB: every weight of wav2vec2-base and HuBERT-large is one block for up to 4
# candidates).
LOOP_BLOCK_ELEMENTS = 1 << 19
BROADCAST_BLOCK_ELEMENTS = 1 << 24

__all__ = ["DEAD_CANDIDATE_THRESHOLD", "fused_mix_fake_quantize", "compiled_fused_mix_fake_quantize"]


def _levels_(x: torch.Tensor, bits: int) -> torch.Tensor:
    """L_b(x) in place, for x = W / s already clamped to [-q_b, q_b]: round, or sign with sign(0) = +1."""
    if bits == 1:
        return torch.ge(x, 0, out=x).mul_(2).sub_(1)
    return x.round_()


# ---- candidate loop (CPU): a few block-sized buffers, reused by every candidate ----------------

_WORKSPACE = threading.local()


def _scratch(count: int, like: torch.Tensor) -> list[torch.Tensor]:
    """``count`` uninitialised tensors shaped and typed like ``like``, views of one flat buffer per
    thread that is reused by every call (fresh block-sized tensors in every call cost page faults on
    the CPU). The buffer grows to the largest request: count x LOOP_BLOCK_ELEMENTS elements unless a
    single output channel is larger. Under torch.compile: new tensors (inductor plans its own memory,
    and a Python-side buffer would break its graph)."""
    if torch.compiler.is_compiling():
        return [torch.empty_like(like) for _ in range(count)]
    size = like.numel()
    flat = getattr(_WORKSPACE, "buffer", None)
    if flat is None or flat.numel() < count * size or flat.dtype != like.dtype or flat.device != like.device:
        flat = _WORKSPACE.buffer = torch.empty(count * size, dtype=like.dtype, device=like.device)
    return [flat[j * size:(j + 1) * size].view(like.shape) for j in range(count)]


def _forward_loop(
    w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, bits: tuple[int, ...], out: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_i g_i s_i L_i(w / s_i) for w (R, N), s (n, R), g (n,) -> (R, N), into ``out`` if given;
    one scratch buffer, reused."""
    out = torch.empty_like(w) if out is None else out
    (levels,) = _scratch(1, w)
    for i, b in enumerate(bits):
        si = s[i][:, None]  # (R, 1)
        q = qmax(b)
        _levels_(torch.div(w, si, out=levels).clamp_(-q, q), b)  # (R, N): L_i
        if i == 0:
            torch.mul(levels, si * g[i], out=out)
        else:
            out.addcmul_(levels, si * g[i])
    return out


def _backward_loop(
    grad: torch.Tensor, w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, bits: tuple[int, ...],
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dw (R, N), dL/ds (n, R) before the LSQ factor, dL/dg (n,)) for grad = dL/dW_eff (R, N);
    dL/dw is written into ``out`` if given.

    m_i is kept as 0/1 floats (a boolean mask would be converted to float by every product that
    reads it: one more weight-sized pass each), and sum_j dOut_j m_ij x_ij is computed as
    (1 / s_i) sum_j m_ij (W dOut)_j from one product W * dOut shared by all candidates. Row sums of
    products go through a scratch buffer and ``sum(1)`` (bmm's batched dot products of one row
    each were 4-5 times slower on the CPU)."""
    x, levels, inside, w_grad = _scratch(4, w)
    coef = torch.empty_like(w) if out is None else out
    torch.mul(w, grad, out=w_grad)  # (R, N): W dOut
    ds, dg = [], []
    for i, b in enumerate(bits):
        si = s[i][:, None]  # (R, 1)
        q = qmax(b)
        torch.div(w, si, out=x)  # x = W / s_i
        torch.eq(x, torch.clamp(x, -q, q, out=levels), out=inside)  # m_i: |x| <= q_i, as 0/1
        levels_dot = torch.mul(grad, _levels_(levels, b), out=x).sum(1)  # (R,): sum_j dOut L_i
        clip_dot = torch.mul(w_grad, inside, out=x).sum(1).div_(s[i])  # (R,): sum_j dOut m_i x
        ds.append(g[i] * (levels_dot - clip_dot))
        dg.append((levels_dot * s[i]).sum())
        if i == 0:
            torch.mul(inside, g[i], out=coef)
        else:
            coef.addcmul_(inside, g[i])
    return coef.mul_(grad), torch.stack(ds), torch.stack(dg)


# ---- candidates broadcast (accelerators): a fixed number of operators whatever n is -------------

def _levels_all_(x: torch.Tensor, bits: tuple[int, ...]) -> torch.Tensor:
    """L_{b_i}(x_i) in place for x (n, R, N) clamped: sign for 1-bit candidates, then round
    (which leaves those signs as they are)."""
    for i, b in enumerate(bits):
        if b == 1:
            torch.ge(x[i], 0, out=x[i]).mul_(2).sub_(1)
    return x.round_()


def _forward_broadcast(w, s, g, bits, q_lo, q_hi, out=None):
    """_forward_loop's result from (n, R, N) temporaries; q_lo, q_hi = -q_i, q_i as (n, 1, 1)."""
    levels = _levels_all_(torch.div(w, s[:, :, None]).clamp_(q_lo, q_hi), bits)  # (n, R, N): L_i
    levels.mul_((s * g[:, None])[:, :, None])
    return levels.sum(0) if out is None else torch.sum(levels, 0, out=out)


def _backward_broadcast(grad, w, s, g, bits, q_lo, q_hi, out=None):
    """_backward_loop's result from two (n, R, N) float temporaries and a boolean one."""
    x = torch.div(w, s[:, :, None])  # (n, R, N): x_i = W / s_i
    levels = torch.clamp(x, q_lo, q_hi)
    inside = torch.eq(x, levels)  # m_i: |x_i| <= q_i
    levels_dot = _levels_all_(levels, bits).mul_(grad).sum(2)  # (n, R): sum_j dOut L_i
    clip_dot = x.mul_(inside).mul_(grad).sum(2)  # (n, R): sum_j dOut m_i x_i
    coef = torch.mul(inside, g[:, None, None], out=x).sum(0)  # sum_i g_i m_i
    grad_w = coef.mul_(grad) if out is None else torch.mul(coef, grad, out=out)  # dOut sum_i g_i m_i
    return grad_w, g[:, None] * (levels_dot - clip_dot), (levels_dot * s).sum(1)


_QMAX_BOUNDS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _qmax_bounds(bits: tuple[int, ...], like: torch.Tensor, dims: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(-q_i, q_i) as (n, 1, ...) tensors of ``dims`` dimensions on ``like``'s device, built once per
    device and candidate set (built in every step, they would be copied from host memory to the
    device each time)."""
    key = (bits, like.device, like.dtype, dims)
    if key not in _QMAX_BOUNDS:
        q = torch.tensor([float(qmax(b)) for b in bits], dtype=like.dtype).to(like.device)
        q = q.view(-1, *[1] * (dims - 1))
        _QMAX_BOUNDS[key] = (-q, q)
    return _QMAX_BOUNDS[key]


_compiled: dict[tuple[str, bool], object] = {}


def _kernels(compile: bool, broadcast: bool):
    """The per-block forward and backward functions of a strategy, eager or compiled once per process."""
    forward, backward = (_forward_broadcast, _backward_broadcast) if broadcast else (_forward_loop, _backward_loop)
    if not compile:
        return forward, backward
    if ("forward", broadcast) not in _compiled:
        _compiled["forward", broadcast] = torch.compile(forward, dynamic=True)
        _compiled["backward", broadcast] = torch.compile(backward, dynamic=True)
    return _compiled["forward", broadcast], _compiled["backward", broadcast]


def _row_blocks(w: torch.Tensor, candidates: int, broadcast: bool, whole: bool) -> list[slice]:
    """Slices of the output channels of w (C, N) whose temporaries, (R, N) in the loop and
    (candidates, R, N) in the broadcast, stay within the strategy's block size (one slice if ``whole``)."""
    rows, per_row = w.shape[0], w.shape[1] * (candidates if broadcast else 1)
    limit = BROADCAST_BLOCK_ELEMENTS if broadcast else LOOP_BLOCK_ELEMENTS
    step = rows if whole else max(1, limit // max(per_row, 1))
    return [slice(r, min(r + step, rows)) for r in range(0, rows, step)]


def _native_kernel(w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, broadcast: bool, compile: bool) -> bool:
    """Whether this call runs on the C kernel (espnet_mpq.core.native): the CPU loop, float32
    contiguous tensors, at most native.MAX_CANDIDATES candidates, and a kernel that could be built."""
    return (not broadcast and not compile and g.numel() <= native.MAX_CANDIDATES and native.usable(w, s, g)
            and native.kernels() is not None)


def _plan(w: torch.Tensor, bits: tuple[int, ...], active: tuple[int, ...], broadcast: bool, compile: bool):
    """What forward and backward share: the active candidates' bits, the broadcast's q bounds
    (none for the loop) and the blocks of output channels."""
    used = tuple(bits[i] for i in active)
    return used, (_qmax_bounds(used, w) if broadcast else ()), _row_blocks(w, len(used), broadcast, compile)


class _FusedMixFakeQuantize(torch.autograd.Function):
    """W, s (positive, n x C), g, bits -> W_eff; see the module docstring."""

    @staticmethod
    def forward(ctx, weight, scales, mixture, bits, active, compile, broadcast):
        forward_block, _ = _kernels(compile, broadcast)
        w = weight.reshape(weight.shape[0], -1)  # (C, N)
        s, g = _take(scales, active), _take(mixture, active)
        used, extra, blocks = _plan(w, bits, active, broadcast, compile)
        if _native_kernel(w, s, g, broadcast, compile):
            w_eff = native.forward(w, s, g, used)
        elif len(blocks) == 1:
            w_eff = forward_block(w, s, g, used, *extra)
        else:  # eager kernels only (compiled ones take the whole weight): each block writes its rows
            w_eff = torch.empty_like(w)
            for rows in blocks:
                forward_block(w[rows], s[:, rows], g, used, *extra, out=w_eff[rows])
        ctx.save_for_backward(weight, scales, mixture)
        ctx.bits, ctx.active, ctx.compile, ctx.broadcast = bits, active, compile, broadcast
        return w_eff.view_as(weight)

    @staticmethod
    def backward(ctx, grad_out):
        weight, scales, mixture = ctx.saved_tensors
        _, backward_block = _kernels(ctx.compile, ctx.broadcast)
        active = ctx.active
        w = weight.reshape(weight.shape[0], -1)  # (C, N)
        grad = grad_out.reshape(w.shape)
        s, g = _take(scales, active), _take(mixture, active)
        used, extra, blocks = _plan(w, ctx.bits, active, ctx.broadcast, ctx.compile)
        if _native_kernel(w, s, g, ctx.broadcast, ctx.compile):
            grad_w, grad_s, grad_g = native.backward(grad.contiguous(), w, s, g, used)
        elif len(blocks) == 1:
            grad_w, grad_s, grad_g = backward_block(grad, w, s, g, used, *extra)
        else:  # as in forward: each block writes its rows of dL/dW
            grad_w = torch.empty_like(w)
            parts = [backward_block(grad[rows], w[rows], s[:, rows], g, used, *extra, out=grad_w[rows])
                     for rows in blocks]
            grad_s = torch.cat([p[1] for p in parts], dim=1)
            grad_g = torch.stack([p[2] for p in parts]).sum(0)
        if ctx.broadcast:  # the LSQ factor 1 / sqrt(N q_i), from the device's q (nothing from the host)
            grad_s.mul_(torch.rsqrt(extra[1].view(-1, 1) * w.shape[1]))
        else:  # one Python float per candidate
            for j, b in enumerate(used):
                grad_s[j].mul_(1.0 / math.sqrt(w.shape[1] * qmax(b)))
        return (grad_w.view_as(weight), _put(grad_s, active, scales), _put(grad_g, active, mixture),
                None, None, None, None)


def _take(x: torch.Tensor, active: tuple[int, ...]) -> torch.Tensor:
    """x[active] along dim 0; x itself when every candidate is active (no index list: on a GPU
    building one copies from host memory, which waits for the device)."""
    return x if len(active) == x.shape[0] else x[list(active)]


def _put(part: torch.Tensor, active: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A zero tensor shaped ``like`` with rows ``active`` = part; part itself when all are active."""
    if len(active) == like.shape[0]:
        return part
    full = torch.zeros_like(like)
    full[list(active)] = part
    return full


def _active(mixture: torch.Tensor, dead_threshold: float) -> tuple[int, ...]:
    """Indices of the candidates to compute: g_i >= dead_threshold (all when the threshold is 0
    or g is on an accelerator)."""
    if dead_threshold <= 0 or mixture.shape[0] == 1 or mixture.device.type != "cpu":
        return tuple(range(mixture.shape[0]))
    return tuple(i for i, gi in enumerate(mixture.detach().tolist()) if gi >= dead_threshold)


def fused_mix_fake_quantize(
    weight: torch.Tensor,
    scales: torch.Tensor,
    mixture: torch.Tensor,
    bits: tuple[int, ...],
    dead_threshold: float = DEAD_CANDIDATE_THRESHOLD,
    compile: bool = False,
    broadcast: bool | None = None,
) -> torch.Tensor:
    """W_eff = sum_i g_i Q_{b_i}(W) as one autograd op (see the module docstring).

    Args:
        weight: W (C_out, ...), float32.
        scales: s (n, C_out), one row per candidate, as learned (the positive scale is applied here).
        mixture: g (n,).
        bits: the n candidate bit-widths.
        dead_threshold: candidates with g_i below it are skipped (0 computes all; CPU only).
        compile: run the per-block math through torch.compile.
        broadcast: compute all candidates in one broadcast (n, C_out, ...) pass (True) or loop
            over them (False); None (default) broadcasts on accelerators and loops on the CPU.
            With ESPNET_MPQ_TRITON=1, True and None run the Triton kernel where it takes the
            tensors (CUDA; CPU under TRITON_INTERPRET=1): espnet_mpq.core.triton_kernel.

    Returns:
        W_eff, the shape of ``weight``. Equal to ``mix_fake_quantize`` in values and in every
        gradient (to rounding) when no candidate is skipped; with one candidate and g = [1]
        the values are bit-identical to ``fake_quantize``.
    """
    bits = tuple(bits)
    if scales.shape[0] != len(bits) or mixture.shape != (len(bits),):
        raise ValueError(
            f"{len(bits)} candidates {list(bits)} need scales (n, C_out) and mixture (n,); "
            f"got {tuple(scales.shape)} and {tuple(mixture.shape)}"
        )
    if broadcast is not False and not compile and triton_kernel.usable(bits, weight, scales, mixture):
        return triton_kernel.mix_fake_quantize(weight, scales, mixture, bits)
    if broadcast is None:
        broadcast = weight.device.type != "cpu"
    active = tuple(range(len(bits))) if compile else _active(mixture, dead_threshold)
    return _FusedMixFakeQuantize.apply(weight, positive_scale(scales), mixture, bits, active, compile, broadcast)


def compiled_fused_mix_fake_quantize(
    weight: torch.Tensor, scales: torch.Tensor, mixture: torch.Tensor, bits: tuple[int, ...]
) -> torch.Tensor:
    """``fused_mix_fake_quantize`` with its math compiled by torch.compile (one compile per process
    and candidate set, tens of seconds on a CPU)."""
    return fused_mix_fake_quantize(weight, scales, mixture, bits, compile=True)
