"""The mixture quantizers of many weights as one autograd op: one call per step for a model.

For layers l = 1..L with weights W_l (C_l, ...), positive scales s_l (n, C_l) and mixture
weights g_l (n,) over the same candidate bit-widths b_1..b_n, computes every

    W_eff_l = sum_i g_li * s_li * L_i(W_l / s_li)

(``fused``'s formula, one layer at a time) over the concatenation of all the weights, flat:
E = sum_l numel(W_l) elements, C = sum_l C_l channels. A per-channel quantity (n, C) reaches
the elements by ``index_select`` with each element's channel, and the backward pass's
per-channel sums are ``index_add_`` over the channels:

    dL/dW          = dOut * sum_i g_i m_i                                  (STE, elementwise)
    dL/ds_ic       = g_i / sqrt(N_c q_i) * sum_{j in c} dOut_j (L_i(x_j) - m_ij x_j)   (LSQ)
    dL/dg_li       = sum_{c in l} s_ic * sum_{j in c} dOut_j L_i(x_j)

(N_c = elements of channel c, x = W / s_i, m_i = 1[|x| <= q_i]), the same values and
gradients as ``fused_mix_fake_quantize`` per layer, to float rounding: the sums run in
another order, and on a GPU ``index_add_`` adds in a nondeterministic order.

Why: on a GPU the per-layer op's step is bound by the host dispatching small operators
(about 55-64 per weight and step; RESULTS.md). Here a step dispatches a fixed number per
block of elements (about 10 forward, 15 backward) and a few views per layer, whatever L is.
The elements are processed in blocks whose (n, E_b) temporaries hold at most
GROUPED_BLOCK_ELEMENTS floats; each block finds its elements' channels with ``searchsorted``
over the channel starts, so nothing of size E is kept besides the weights themselves. The
backward pass recomputes everything from W, s and g.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from espnet_mpq.core.fused import _levels_all_, _qmax_bounds
from espnet_mpq.core.primitives import positive_scale

# Elements of one (n, E_b) temporary, at most (16 M floats = 64 MB, as the per-layer broadcast's
# blocks): wav2vec2-base's 94 M quantized weights are 17 blocks for 3 candidates. The step hook
# (transform.GroupedStep) also sizes its calls by it.
GROUPED_BLOCK_ELEMENTS = 1 << 24

__all__ = ["GROUPED_BLOCK_ELEMENTS", "grouped_mix_fake_quantize"]


@dataclass(frozen=True)
class _Layout:
    """Where each weight and channel lies in the flat concatenation, on one device."""

    sizes: tuple[int, ...]  # elements of each weight
    channel_starts: torch.Tensor  # (C,) int32: flat index of each channel's first element
    channel_layer: torch.Tensor  # (C,) int32: the weight each channel belongs to
    channel_elements: torch.Tensor  # (C,) float32: N_c

    @property
    def elements(self) -> int:
        return sum(self.sizes)


_LAYOUTS: dict[tuple, _Layout] = {}
_LSQ_FACTORS: dict[tuple, torch.Tensor] = {}


def _layout(weights: Sequence[torch.Tensor]) -> _Layout:
    """The layout of these weights' shapes, built on the host once per shapes and device."""
    device = weights[0].device
    key = (tuple(tuple(w.shape) for w in weights), device)
    if key not in _LAYOUTS:
        starts, layer_of, per_channel, offset = [], [], [], 0
        for l, w in enumerate(weights):
            channels, n = w.shape[0], w[0].numel()
            starts.extend(range(offset, offset + channels * n, n))
            layer_of.extend([l] * channels)
            per_channel.extend([float(n)] * channels)
            offset += channels * n
        _LAYOUTS[key] = _Layout(
            sizes=tuple(w.numel() for w in weights),
            channel_starts=torch.tensor(starts, dtype=torch.int32).to(device),
            channel_layer=torch.tensor(layer_of, dtype=torch.int32).to(device),
            channel_elements=torch.tensor(per_channel, dtype=torch.float32).to(device),
        )
    return _LAYOUTS[key]


def _lsq_factors(layout: _Layout, bits: tuple[int, ...]) -> torch.Tensor:
    """1 / sqrt(N_c q_i) as (n, C), once per layout and candidate set."""
    key = (id(layout), bits)
    if key not in _LSQ_FACTORS:
        _, q = _qmax_bounds(bits, layout.channel_elements, dims=2)
        _LSQ_FACTORS[key] = torch.rsqrt(q * layout.channel_elements)
    return _LSQ_FACTORS[key]


def _blocks(layout: _Layout, candidates: int):
    """(start, end, channel of each element (end - start,)) over the flat elements, in blocks
    of at most GROUPED_BLOCK_ELEMENTS / candidates elements."""
    step = max(1, GROUPED_BLOCK_ELEMENTS // candidates)
    starts = layout.channel_starts
    for a in range(0, layout.elements, step):
        b = min(a + step, layout.elements)
        index = torch.arange(a, b, dtype=torch.int32, device=starts.device)
        yield a, b, torch.searchsorted(starts, index, right=True, out_int32=True).sub_(1)


def _flat(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([w.reshape(-1) for w in weights])


class _GroupedMixFakeQuantize(torch.autograd.Function):
    """s (positive, n x C), g (L x n), bits, W_1..W_L -> the flat W_eff (E,); see the module docstring."""

    @staticmethod
    def forward(ctx, scales, mixture, bits, *weights):
        layout = _layout(weights)
        q_lo, q_hi = _qmax_bounds(bits, scales, dims=2)
        weighted = scales * mixture.t().index_select(1, layout.channel_layer)  # (n, C): g_i s_ic
        w = _flat(weights)
        out = torch.empty_like(w)
        for a, b, channel in _blocks(layout, len(bits)):
            x = torch.div(w[a:b], scales.index_select(1, channel)).clamp_(q_lo, q_hi)  # (n, E_b)
            torch.sum(_levels_all_(x, bits).mul_(weighted.index_select(1, channel)), 0, out=out[a:b])
        ctx.save_for_backward(scales, mixture, *weights)
        ctx.bits = bits
        return out

    @staticmethod
    def backward(ctx, grad_out):
        scales, mixture, *weights = ctx.saved_tensors
        bits, layout = ctx.bits, _layout(weights)
        q_lo, q_hi = _qmax_bounds(bits, scales, dims=2)
        g = mixture.t().index_select(1, layout.channel_layer)  # (n, C): g_i of each channel's layer
        w = _flat(weights)
        levels_dot, clip_dot = torch.zeros_like(scales), torch.zeros_like(scales)  # (n, C)
        grad_w = torch.empty_like(w)
        for a, b, channel in _blocks(layout, len(bits)):
            grad = grad_out[a:b]
            x = torch.div(w[a:b], scales.index_select(1, channel))  # (n, E_b): x_i = W / s_i
            levels = torch.clamp(x, q_lo, q_hi)
            inside = torch.eq(x, levels)  # m_i: |x_i| <= q_i
            levels_dot.index_add_(1, channel, _levels_all_(levels, bits).mul_(grad))  # sum_j dOut L_i
            clip_dot.index_add_(1, channel, x.mul_(inside).mul_(grad))  # sum_j dOut m_i x_i
            torch.sum(torch.mul(inside, g.index_select(1, channel), out=x), 0, out=grad_w[a:b]).mul_(grad)
        grad_s = g.mul_(levels_dot - clip_dot).mul_(_lsq_factors(layout, bits))
        grad_g = mixture.new_zeros(len(bits), len(weights)).index_add_(1, layout.channel_layer, levels_dot.mul_(scales))
        grad_weights = [part.view_as(wl) for part, wl in zip(grad_w.split(layout.sizes), weights)]
        return (grad_s, grad_g.t(), None, *grad_weights)


def grouped_mix_fake_quantize(
    weights: Sequence[torch.Tensor],
    scales: Sequence[torch.Tensor],
    mixture: torch.Tensor,
    bits: Sequence[int],
) -> list[torch.Tensor]:
    """[W_eff_1, ..., W_eff_L] for weights over the same candidates, as one autograd op.

    Args:
        weights: W_l (C_l, ...), float32, on one device.
        scales: s_l (n, C_l), as learned (the positive scale is applied here).
        mixture: g (L, n), row l the mixture weights of weight l.
        bits: the n candidate bit-widths.

    Returns:
        W_eff_l, each shaped like W_l (views of one flat tensor). Values and gradients equal
        ``fused_mix_fake_quantize(W_l, s_l, g_l, bits, dead_threshold=0)`` for every l, to
        float rounding. A weight whose W_eff_l the loss does not use gets zero gradients
        (W_l, s_l and g_l), not None.
    """
    bits = tuple(bits)
    n, layers = len(bits), len(weights)
    if not layers:
        raise ValueError("grouped_mix_fake_quantize needs at least one weight")
    bad = [l for l, (w, s) in enumerate(zip(weights, scales)) if tuple(s.shape) != (n, w.shape[0])]
    if len(scales) != layers or bad or tuple(mixture.shape) != (layers, n):
        raise ValueError(
            f"{layers} weights over {n} candidates {list(bits)} need {layers} scales (n, C_l) and mixture "
            f"(L, n) = {(layers, n)}; got {len(scales)} scales"
            + (f" (weight {bad[0]}: scales {tuple(scales[bad[0]].shape)} for weight {tuple(weights[bad[0]].shape)})"
               if bad else "")
            + f" and mixture {tuple(mixture.shape)}"
        )
    flat = _GroupedMixFakeQuantize.apply(positive_scale(torch.cat(list(scales), dim=1)), mixture, bits, *weights)
    return [part.view(w.shape) for part, w in zip(flat.split([w.numel() for w in weights]), weights)]
