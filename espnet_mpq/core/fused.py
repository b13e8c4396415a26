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
pass: it recomputes L_i and m_i from W, s and g, in place in two or three
weight-sized buffers reused by every candidate. The work runs over blocks of
output channels of at most about BLOCK_ELEMENTS elements, which bounds those
buffers (cache-sized blocks were slower on the CPU: the per-operation overhead
outweighs the saved memory traffic). With ``compile=True`` the same functions run
through torch.compile (inductor) over the whole weight: one fused loop forward,
one backward.

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

import torch

from espnet_mpq.core.primitives import positive_scale, qmax

# g_i below this skips candidate i (see the module docstring for the bias it causes).
DEAD_CANDIDATE_THRESHOLD = 1e-4
# Elements per block of output channels (4 M floats = 16 MB per temporary buffer).
BLOCK_ELEMENTS = 1 << 22

__all__ = ["DEAD_CANDIDATE_THRESHOLD", "fused_mix_fake_quantize", "compiled_fused_mix_fake_quantize"]


def _levels_(x: torch.Tensor, bits: int) -> torch.Tensor:
    """L_b(x) in place, for x = W / s already clamped to [-q_b, q_b]: round, or sign with sign(0) = +1."""
    if bits == 1:
        return torch.ge(x, 0, out=x).mul_(2).sub_(1)
    return x.round_()


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_j a_cj b_cj for a, b (C, N) -> (C,), as C batched dot products (no (C, N) temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(a.shape[0])


def _forward_block(w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, bits: tuple[int, ...]) -> torch.Tensor:
    """sum_i g_i s_i L_i(w / s_i) for w (R, N), s (n, R), g (n,) -> (R, N); one temporary, reused."""
    out, levels = torch.empty_like(w), torch.empty_like(w)
    for i, b in enumerate(bits):
        si = s[i][:, None]  # (R, 1)
        q = qmax(b)
        _levels_(torch.div(w, si, out=levels).clamp_(-q, q), b)  # (R, N): L_i
        if i == 0:
            torch.mul(levels, si * g[i], out=out)
        else:
            out.addcmul_(levels, si * g[i])
    return out


def _backward_block(
    grad: torch.Tensor, w: torch.Tensor, s: torch.Tensor, g: torch.Tensor, bits: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dw (R, N), dL/ds (n, R) before the LSQ factor, dL/dg (n,)) for grad = dL/dW_eff (R, N)."""
    x, levels = torch.empty_like(w), torch.empty_like(w)
    inside = torch.empty_like(w, dtype=torch.bool)
    coef = torch.empty_like(w)
    ds, dg = [], []
    for i, b in enumerate(bits):
        si = s[i][:, None]  # (R, 1)
        q = qmax(b)
        torch.div(w, si, out=x)  # x = W / s_i
        torch.eq(x, torch.clamp(x, -q, q, out=levels), out=inside)  # m_i: |x| <= q_i
        levels_dot = _row_dot(grad, _levels_(levels, b))  # (R,): sum_j dOut L_i
        clip_dot = _row_dot(grad, x.mul_(inside))  # (R,): sum_j dOut m_i x
        ds.append(g[i] * (levels_dot - clip_dot))
        dg.append((levels_dot * s[i]).sum())
        if i == 0:
            torch.mul(inside, g[i], out=coef)
        else:
            coef.addcmul_(inside, g[i])
    return coef.mul_(grad), torch.stack(ds), torch.stack(dg)


_compiled: dict[str, object] = {}


def _kernels(compile: bool):
    """The per-block forward and backward functions, eager or compiled once per process."""
    if not compile:
        return _forward_block, _backward_block
    if not _compiled:
        _compiled["forward"] = torch.compile(_forward_block, dynamic=True)
        _compiled["backward"] = torch.compile(_backward_block, dynamic=True)
    return _compiled["forward"], _compiled["backward"]


def _row_blocks(rows: int, per_row: int, whole: bool) -> list[slice]:
    """Slices of output channels with about BLOCK_ELEMENTS elements each (one slice if ``whole``)."""
    step = rows if whole else max(1, BLOCK_ELEMENTS // max(per_row, 1))
    return [slice(r, min(r + step, rows)) for r in range(0, rows, step)]


class _FusedMixFakeQuantize(torch.autograd.Function):
    """W, s (positive, n x C), g, bits -> W_eff; see the module docstring."""

    @staticmethod
    def forward(ctx, weight, scales, mixture, bits, active, compile):
        forward_block, _ = _kernels(compile)
        w = weight.reshape(weight.shape[0], -1)  # (C, N)
        s, g = _take(scales, active), _take(mixture, active)
        used = tuple(bits[i] for i in active)
        out = torch.empty_like(w)
        for rows in _row_blocks(w.shape[0], w.shape[1], compile):
            out[rows] = forward_block(w[rows], s[:, rows], g, used)
        ctx.save_for_backward(weight, scales, mixture)
        ctx.bits, ctx.active, ctx.compile = bits, active, compile
        return out.view_as(weight)

    @staticmethod
    def backward(ctx, grad_out):
        weight, scales, mixture = ctx.saved_tensors
        _, backward_block = _kernels(ctx.compile)
        active = ctx.active
        used = tuple(ctx.bits[i] for i in active)
        w = weight.reshape(weight.shape[0], -1)  # (C, N)
        grad = grad_out.reshape(w.shape)
        s, g = _take(scales, active), _take(mixture, active)
        grad_w = torch.empty_like(w)
        grad_s_used = torch.empty_like(s)  # (n_active, C)
        grad_g_used = torch.zeros_like(g)
        for rows in _row_blocks(w.shape[0], w.shape[1], ctx.compile):
            dw, ds, dg = backward_block(grad[rows], w[rows], s[:, rows], g, used)
            grad_w[rows] = dw
            grad_s_used[:, rows] = ds
            grad_g_used += dg
        for j, b in enumerate(used):  # the LSQ factor, a Python float per candidate (nothing from the host)
            grad_s_used[j].mul_(1.0 / math.sqrt(w.shape[1] * qmax(b)))
        return (grad_w.view_as(weight), _put(grad_s_used, active, scales), _put(grad_g_used, active, mixture),
                None, None, None)


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
) -> torch.Tensor:
    """W_eff = sum_i g_i Q_{b_i}(W) as one autograd op (see the module docstring).

    Args:
        weight: W (C_out, ...), float32.
        scales: s (n, C_out), one row per candidate, as learned (the positive scale is applied here).
        mixture: g (n,).
        bits: the n candidate bit-widths.
        dead_threshold: candidates with g_i below it are skipped (0 computes all; CPU only).
        compile: run the per-block math through torch.compile.

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
    active = tuple(range(len(bits))) if compile else _active(mixture, dead_threshold)
    return _FusedMixFakeQuantize.apply(weight, positive_scale(scales), mixture, bits, active, compile)


def compiled_fused_mix_fake_quantize(
    weight: torch.Tensor, scales: torch.Tensor, mixture: torch.Tensor, bits: tuple[int, ...]
) -> torch.Tensor:
    """``fused_mix_fake_quantize`` with its math compiled by torch.compile (one compile per process
    and candidate set, tens of seconds on a CPU)."""
    return fused_mix_fake_quantize(weight, scales, mixture, bits, compile=True)
