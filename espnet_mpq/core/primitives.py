"""Stateless weight-quantization math (symmetric, uniform, signed, per output channel).

Symbols follow shared/METHOD.md. For a bit-width b the integer grid is

    q_b = 2^(b-1) - 1                 (b >= 2: levels -q_b .. +q_b, so b=2 is ternary)
    Q_b(W) = s_b * clamp(round(W / s_b), -q_b, q_b)

and for b = 1 the grid is the sign, {-1, +1}:

    Q_1(W) = s_1 * sign(W),  sign(0) = +1

with one scale per output channel (dim 0 of a Linear or Conv1d weight). The scale
that is applied is |s| clamped at SCALE_EPS (``positive_scale``), in training and in
the packed file alike: a learned scale that crosses zero cannot flip the codes' sign.
Rounding (and the sign) pass gradients straight through (STE) inside the
clipping range; scales get the learned-step-size (LSQ) gradient, scaled by
1 / sqrt(numel_per_channel * q_b).
"""
from __future__ import annotations

import math

import torch

MIN_BITS = 1
MAX_BITS = 8
SCALE_EPS = 1e-8
# Clip ratios searched by the MSE-optimal scale initialisation (fractions of max|W|).
MSE_CLIP_GRID = tuple(0.30 + 0.025 * i for i in range(29))  # 0.30 .. 1.00

__all__ = [
    "check_bits",
    "qmax",
    "positive_scale",
    "init_scale",
    "quantize_to_codes",
    "dequantize",
    "fake_quantize",
    "round_ste",
    "mix_fake_quantize",
]


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is an int in [MIN_BITS, MAX_BITS], else raise ValueError naming it."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bit-width {bits!r} is not allowed: use an integer from {MIN_BITS} to {MAX_BITS}")
    return bits


def qmax(bits: int) -> int:
    """Largest integer level q_b: 2^(b-1) - 1 for b >= 2, and 1 for the sign grid (b = 1)."""
    check_bits(bits)
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def _per_channel(x: torch.Tensor) -> torch.Tensor:
    """View a weight (C_out, ...) as (C_out, N)."""
    return x.reshape(x.shape[0], -1)


def _broadcast(scale: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Scale (C_out,) -> (C_out, 1, ..., 1) to broadcast against ``weight``."""
    return scale.reshape((-1,) + (1,) * (weight.dim() - 1))


def positive_scale(scale: torch.Tensor) -> torch.Tensor:
    """The scale actually applied: max(|s|, SCALE_EPS), elementwise (gradient sign(s) above the floor)."""
    return scale.abs().clamp_min(SCALE_EPS)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _sign_ste(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) = +1 forward; identity gradient backward."""
    sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return x + (sign - x).detach()


def _grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x forward (bit-exact); gradient multiplied by ``factor`` backward (LSQ's step-size scaling)."""
    scaled = x * factor
    return x.detach() + (scaled - scaled.detach())


@torch.no_grad()
def init_scale(weight: torch.Tensor, bits: int, method: str = "mse") -> torch.Tensor:
    """Initial per-channel scale s_b of shape (C_out,) for ``weight`` of shape (C_out, ...).

    - ``max``: s_b = max|W_c| / q_b (no clipping); for b = 1, s_1 = mean|W_c|, the
      L2-optimal scale of the sign grid.
    - ``mse``: s_b = r* max|W_c| / q_b with r* in MSE_CLIP_GRID minimising
      ||Q_b(W_c) - W_c||^2 per channel (b = 1 uses mean|W_c| as for ``max``).
    """
    if method not in ("max", "mse"):
        raise ValueError(f"scale initialisation {method!r} is not allowed: use 'max' or 'mse'")
    w = _per_channel(weight.detach().float())
    if bits == 1:
        return w.abs().mean(dim=1).clamp_min(SCALE_EPS)
    q = qmax(bits)
    base = w.abs().amax(dim=1).clamp_min(SCALE_EPS) / q  # (C,)
    if method == "max":
        return base
    best_err = torch.full_like(base, float("inf"))
    best = base.clone()
    for ratio in MSE_CLIP_GRID:
        s = (base * ratio)[:, None]
        err = ((torch.clamp(torch.round(w / s), -q, q) * s - w) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, base * ratio, best)
    return best


@torch.no_grad()
def quantize_to_codes(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (int8, same shape as ``weight``): clamp(round(W/|s|), -q, q), or sign(W) for b = 1."""
    s = _broadcast(positive_scale(scale.float()), weight)
    w = weight.float()
    if bits == 1:
        return torch.where(w >= 0, 1, -1).to(torch.int8)
    q = qmax(bits)
    return torch.clamp(torch.round(w / s), -q, q).to(torch.int8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Float weight |s| * codes, with ``scale`` (C_out,) broadcast over the channel dim 0."""
    return codes.float() * _broadcast(positive_scale(scale.float()), codes)


def fake_quantize(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Q_b(W) with straight-through gradients to W and LSQ gradients to ``scale`` (C_out,).

    Forward values equal ``dequantize(quantize_to_codes(W, s, b), s)`` exactly; s enters as |s|.
    dQ/dW = 1 where |W/s| <= q_b (inside the clip range), else 0.
    dQ/ds = round(W/s) - W/s inside the range, +-q_b outside (times the LSQ factor).
    """
    q = qmax(bits)
    numel_per_channel = weight[0].numel()
    s = _grad_scale(positive_scale(scale), 1.0 / math.sqrt(numel_per_channel * q))
    s = _broadcast(s, weight)
    x = torch.clamp(weight / s, -q, q)
    levels = _sign_ste(x) if bits == 1 else round_ste(x)
    return levels * s


def mix_fake_quantize(
    weight: torch.Tensor, scales: torch.Tensor, mixture: torch.Tensor, bits: tuple[int, ...]
) -> torch.Tensor:
    """W_eff = sum_i g_i * Q_{b_i}(W) for candidates ``bits`` with ``scales`` (n, C_out) and g = ``mixture`` (n,).

    With a single candidate and g = [1.0] the result equals ``fake_quantize`` exactly.
    This is the reference autograd graph (n per-candidate tensors saved for backward);
    training uses ``espnet_mpq.core.fused.fused_mix_fake_quantize``, which equals it.
    """
    out = mixture[0] * fake_quantize(weight, scales[0], bits[0])
    for i in range(1, len(bits)):
        out = out + mixture[i] * fake_quantize(weight, scales[i], bits[i])
    return out

