"""The mixture quantizers of many weights as one autograd op: a few calls per step for a model.

For layers l = 1..L with weights W_l (C_l, ...), positive scales s_l (n, C_l) and mixture
weights g_l (n,) over the same candidate bit-widths b_1..b_n, computes every

    W_eff_l = sum_i g_li * s_li * L_i(W_l / s_li)

(``fused``'s formula, one layer at a time) over the concatenation of the weights, flat:
E = sum_l numel(W_l) elements, C = sum_l C_l channels. A per-channel quantity (n, C) reaches
the elements by ``index_select`` with each element's channel (``repeat_interleave`` of the
block's channel numbers by their sizes). The backward pass's per-channel sums reshape each weight's piece of a
block to (n, channels, N_l) and sum it (blocks hold whole channels), and its per-layer sums
use ``index_add_`` over the C channels:

    dL/dW          = dOut * sum_i g_i m_i                                  (STE, elementwise)
    dL/ds_ic       = g_i / sqrt(N_c q_i) * sum_{j in c} dOut_j (L_i(x_j) - m_ij x_j)   (LSQ)
    dL/dg_li       = sum_{c in l} s_ic * sum_{j in c} dOut_j L_i(x_j)

(N_c = elements of channel c, x = W / s_i, m_i = 1[|x| <= q_i]): the values and gradients of
``fused_mix_fake_quantize`` per layer, to float rounding (dL/dg sums in another order).

Why: on a GPU the per-layer op's step is bound by the host dispatching small operators
(about 55-64 per weight and step; RESULTS.md). Here a call dispatches a fixed number per
block (about 10 forward, 15 backward) and a few per weight. The (n, E_b) temporaries of a
block hold at most GROUPED_BLOCK_ELEMENTS floats (a channel larger than that is a block
alone). The backward pass recomputes everything from W, s and g.
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
    shapes: tuple[tuple[int, int], ...]  # (C_l, N_l) of each weight
    channel_ids: torch.Tensor  # (C,) int32: 0..C-1
    channel_counts: torch.Tensor  # (C,) int64: N_c
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
        layer_of, per_channel = [], []
        for l, w in enumerate(weights):
            layer_of.extend([l] * w.shape[0])
            per_channel.extend([w[0].numel()] * w.shape[0])
        _LAYOUTS[key] = _Layout(
            sizes=tuple(w.numel() for w in weights),
            shapes=tuple((w.shape[0], w[0].numel()) for w in weights),
            channel_ids=torch.arange(len(per_channel), dtype=torch.int32).to(device),
            channel_counts=torch.tensor(per_channel, dtype=torch.int64).to(device),
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


_BLOCK_PLANS: dict[tuple, list] = {}


def _block_plan(layout: _Layout, candidates: int) -> list[tuple[int, int, list[tuple[int, int, int, int]]]]:
    """Blocks of whole channels with at most GROUPED_BLOCK_ELEMENTS / candidates elements (a
    larger channel alone): (start, end, pieces), a piece (first channel, channels, N_l, its
    start in the block) per weight the block covers. Once per layout and candidate count."""
    key = (id(layout), candidates, GROUPED_BLOCK_ELEMENTS)
    if key not in _BLOCK_PLANS:
        step = max(1, GROUPED_BLOCK_ELEMENTS // candidates)
        plan, pieces, start, offset, channel = [], [], 0, 0, 0
        for channels, n in layout.shapes:
            done = 0
            while done < channels:
                if offset > start and offset + n > start + step:  # the next channel does not fit
                    plan.append((start, offset, pieces))
                    pieces, start = [], offset
                take = max(1, min(channels - done, (start + step - offset) // n))
                pieces.append((channel + done, take, n, offset - start))
                done, offset = done + take, offset + take * n
            channel += channels
        plan.append((start, offset, pieces))
        _BLOCK_PLANS[key] = plan
    return _BLOCK_PLANS[key]


def _blocks(layout: _Layout, candidates: int):
    """(start, end, pieces, channel of each element (end - start,)) of each block of _block_plan."""
    for a, b, pieces in _block_plan(layout, candidates):
        first, last = pieces[0][0], pieces[-1][0] + pieces[-1][1]  # the block's channels
        channel = torch.repeat_interleave(layout.channel_ids[first:last], layout.channel_counts[first:last],
                                          output_size=b - a)
        yield a, b, pieces, channel


def _channel_sums(x: torch.Tensor, pieces, out: torch.Tensor) -> None:
    """out[:, c] = sum of x (n, E_b) over channel c's elements, for every channel of the block
    (a reshape and a sum per weight piece: no scatter, no atomics)."""
    for first, channels, n, at in pieces:
        piece = x[:, at:at + channels * n].view(x.shape[0], channels, n)
        torch.sum(piece, 2, out=out[:, first:first + channels])


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
        for a, b, _, channel in _blocks(layout, len(bits)):
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
        levels_dot, clip_dot = torch.empty_like(scales), torch.empty_like(scales)  # (n, C)
        grad_w = torch.empty_like(w)
        for a, b, pieces, channel in _blocks(layout, len(bits)):
            grad = grad_out[a:b]
            x = torch.div(w[a:b], scales.index_select(1, channel))  # (n, E_b): x_i = W / s_i
            levels = torch.clamp(x, q_lo, q_hi)
            inside = torch.eq(x, levels)  # m_i: |x_i| <= q_i
            _channel_sums(_levels_all_(levels, bits).mul_(grad), pieces, levels_dot)  # sum_j dOut L_i
            _channel_sums(x.mul_(inside).mul_(grad), pieces, clip_dot)  # sum_j dOut m_i x_i
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
