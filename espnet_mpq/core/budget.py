"""The storage budget of a search: its window, its feasibility, the final allocation, the search figures.

A target is a promise about the deployed model (shared/METHOD.md, "Keeping the budget"):

    average bits T:  (T - AVG_BITS_TOLERANCE) <= sum_l n_l b_l / N <= T
    size budget B:   (1 - SIZE_TOLERANCE) B <= size_mb <= B

with n_l the weights of quantized layer l, N = sum_l n_l, and size_mb the exact
storage of ``accounting.storage_report`` (codes, one float32 scale per channel,
every other parameter in float32). Both are windows on sum_l n_l b_l, the only
part that depends on the choice; ``allocation.allocate_budget`` picks the most
probable choice inside the window.

Search figures (``search_summary``), over the quantized layers:

    expected_avg_bits   sum_l n_l E_bits^l / N,  E_bits^l = sum_i softmax(lambda^l)_i b_i
    argmax_avg_bits     sum_l n_l b_{argmax lambda^l} / N
    projected_avg_bits  the average of the choice ``allocate`` would deploy now
    mean_max_prob       mean over searching layers of max_i softmax(lambda^l)_i

Size-weighted search (``arch_lr_scales``): Adam divides each logit's gradient by its
own running RMS, so a constant factor in a layer's size-penalty gradient (its share
n_l / N of the cost) never reaches the update. The share has to be in the step size:
layer l's size logits (or its only logits, without split_logits) get the learning rate
arch_lr * n_l / mean_l' n_l'. A layer a tenth of another's size moves a tenth as fast.
With split_logits the task logits learn at arch_lr in every layer (espnet_mpq.core.supernet);
the layers larger than the mean, which hold most of the bits, then move their size
logits faster than their task logits, so the penalty can pull the expected bits down to
the target. (Scaled by / max n instead, the largest layer's two parts tie and the
search stopped near 2 bits at a 1.5-bit target: RESULTS.md, budget sweep.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from espnet_mpq.core.accounting import FLOAT_BITS, SCALE_BITS, storage_report
from espnet_mpq.core.allocation import InfeasibleBudget, allocate_argmax, allocate_budget, feasible_range
from espnet_mpq.core.supernet import MixedPrecisionWeight
from espnet_mpq.core.transform import quantized_layers

AVG_BITS_TOLERANCE = 0.05  # deployed average bits lie in [T - this, T]
SIZE_TOLERANCE = 0.01  # deployed size lies in [(1 - this) B, B]
BITS_PER_MB = 8e6

__all__ = [
    "AVG_BITS_TOLERANCE",
    "SIZE_TOLERANCE",
    "SizeTarget",
    "Layer",
    "layers_of",
    "check_target",
    "allocate",
    "fix_to_allocation",
    "search_summary",
    "arch_lr_scales",
    "arch_lr_groups",
]


@dataclass(frozen=True)
class SizeTarget:
    """Exactly one of ``avg_bits`` (average bits over quantized weights) or ``size_mb`` (whole module, MB)."""

    avg_bits: float | None = None
    size_mb: float | None = None

    def __post_init__(self):
        if (self.avg_bits is None) == (self.size_mb is None):
            raise ValueError("a size target is exactly one of avg_bits or size_mb")

    def describe(self) -> str:
        return f"target_avg_bits={self.avg_bits}" if self.avg_bits is not None else f"size_budget_mb={self.size_mb}"


@dataclass(frozen=True)
class Layer:
    name: str
    supernet: MixedPrecisionWeight
    numel: int
    channels: int


def layers_of(model: nn.Module) -> list[Layer]:
    """The quantized layers of ``model`` with their weight counts, in module order."""
    modules = dict(model.named_modules())
    out = []
    for name, s in quantized_layers(model):
        latent = modules[name].parametrizations.weight.original
        out.append(Layer(name, s, latent.numel(), latent.shape[0]))
    if not out:
        raise ValueError("the model has no quantized layers")
    return out


def _fixed_bits(model: nn.Module, layers: list[Layer]) -> int:
    """Bits that do not depend on the choice: the scales and every float parameter."""
    return sum(layer.channels * SCALE_BITS for layer in layers) + FLOAT_BITS * storage_report(model).float_params


def _window(model: nn.Module, layers: list[Layer], target: SizeTarget) -> tuple[float, float]:
    """[lo, hi] on sum_l n_l b_l for ``target``."""
    if target.avg_bits is not None:
        n = sum(layer.numel for layer in layers)
        return (target.avg_bits - AVG_BITS_TOLERANCE) * n, target.avg_bits * n
    fixed = _fixed_bits(model, layers)
    budget = target.size_mb * BITS_PER_MB
    return (1 - SIZE_TOLERANCE) * budget - fixed, budget - fixed


def _candidates(layers: list[Layer]) -> list[tuple[int, ...]]:
    return [layer.supernet.candidate_bits for layer in layers]


def check_target(model: nn.Module, target: SizeTarget) -> None:
    """Raise ValueError naming the target, the model's floor and ceiling, when no deployed choice can meet it.

    Floor and ceiling: every quantized layer at its smallest / largest candidate (layers
    with a single candidate included), parameter-weighted.
    """
    layers = layers_of(model)
    numels, bits = [layer.numel for layer in layers], _candidates(layers)
    lo_bits, hi_bits = feasible_range(numels, bits)
    if target.avg_bits is not None:
        n = sum(numels)
        floor, ceil, unit = lo_bits / n, hi_bits / n, "average bits"
        value = target.avg_bits
    else:
        fixed = _fixed_bits(model, layers)
        floor, ceil, unit = (lo_bits + fixed) / BITS_PER_MB, (hi_bits + fixed) / BITS_PER_MB, "MB"
        value = target.size_mb
    if not floor <= value <= ceil:
        raise ValueError(
            f"quantizer_conf {target.describe()} is outside what this model's {len(layers)} quantized layers "
            f"allow: floor {floor:.4g}, ceiling {ceil:.4g} {unit}"
        )
    lo, hi = _window(model, layers, target)
    try:
        allocate_budget([[0.0] * len(b) for b in bits], numels, bits, lo, hi)
    except InfeasibleBudget as e:
        raise ValueError(f"quantizer_conf {target.describe()} cannot be met by this model's layers: {e}") from None


@torch.no_grad()
def _log_probs(layers: list[Layer]) -> list[np.ndarray]:
    """log softmax(lambda^l) per layer, in float64: a few operators on the device and one transfer,
    then numpy per layer (no operator per layer)."""
    supernets = [layer.supernet for layer in layers]
    flat = (torch.cat([s.arch_logits for s in supernets]) + torch.cat([s.size_logits for s in supernets]))
    flat = flat.double().cpu().numpy()
    out, i = [], 0
    for layer in layers:
        x = flat[i:i + len(layer.supernet.candidate_bits)]
        shifted = x - x.max()
        out.append(shifted - np.log(np.exp(shifted).sum()))
        i += len(x)
    return out


def allocate(model: nn.Module, target: SizeTarget | None, rule: str = "budget") -> dict[str, int]:
    """Layer name -> candidate index to deploy. Fixed layers keep their candidate.

    ``budget``: ``allocation.allocate_budget`` over the window of ``target``;
    ``argmax``: each searching layer's argmax(lambda).
    """
    layers = layers_of(model)
    log_probs = _log_probs(layers)
    if rule == "argmax":
        picks = allocate_argmax(log_probs)
    elif rule == "budget":
        if target is None:
            raise ValueError("allocation 'budget' needs a size target")
        lo, hi = _window(model, layers, target)
        # A fixed layer is a certain choice: its only candidate is the fixed one.
        fixed = [layer.supernet.chosen_index if layer.supernet.is_fixed else None for layer in layers]
        lps = [[0.0] if k is not None else lp for k, lp in zip(fixed, log_probs)]
        bits = [(b[k],) if k is not None else b for k, b in zip(fixed, _candidates(layers))]
        picks = allocate_budget(lps, [layer.numel for layer in layers], bits, lo, hi)
    else:
        raise ValueError(f"allocation {rule!r} is not allowed: use 'budget' or 'argmax'")
    for i, layer in enumerate(layers):  # both rules: a fixed layer keeps its own index
        if layer.supernet.is_fixed:
            picks[i] = layer.supernet.chosen_index
    return {layer.name: k for layer, k in zip(layers, picks)}


def fix_to_allocation(model: nn.Module, target: SizeTarget | None, rule: str = "budget") -> dict[str, int]:
    """Fix every layer at ``allocate``'s choice; return layer name -> bits."""
    picks = allocate(model, target, rule)
    bits = {}
    for layer in layers_of(model):
        if not layer.supernet.is_fixed:
            layer.supernet.fix(picks[layer.name])
        bits[layer.name] = layer.supernet.chosen_bits
    return bits


def _average(layers: list[Layer], picks: list[int]) -> float:
    n = sum(layer.numel for layer in layers)
    return sum(layer.numel * layer.supernet.candidate_bits[k] for layer, k in zip(layers, picks)) / n


def search_summary(model: nn.Module, target: SizeTarget | None, rule: str = "budget") -> dict[str, float]:
    """The search figures of the module docstring (floats, one device transfer)."""
    layers = layers_of(model)
    log_probs = _log_probs(layers)
    probs = [np.exp(lp) for lp in log_probs]
    n = sum(layer.numel for layer in layers)
    expected, argmax_picks, max_probs = 0.0, [], []
    for layer, p in zip(layers, probs):
        s = layer.supernet
        if s.is_fixed:
            expected += layer.numel * s.candidate_bits[s.chosen_index]
            argmax_picks.append(s.chosen_index)
        else:
            expected += layer.numel * float(np.dot(p, s.candidate_bits))
            argmax_picks.append(int(np.argmax(p)))
            max_probs.append(float(p.max()))
    projected = allocate(model, target, rule) if rule == "argmax" or target is not None else None
    summary = {
        "expected_avg_bits": expected / n,
        "argmax_avg_bits": _average(layers, argmax_picks),
        "mean_max_prob": float(np.mean(max_probs)) if max_probs else 1.0,
    }
    if projected is not None:
        summary["projected_avg_bits"] = _average(layers, [projected[layer.name] for layer in layers])
    return summary


def arch_lr_scales(model: nn.Module) -> dict[str, float]:
    """Layer name -> n_l / mean_l' n_l', the factor on arch_lr for that layer's size logits (module docstring)."""
    layers = layers_of(model)
    mean = sum(layer.numel for layer in layers) / len(layers)
    return {layer.name: layer.numel / mean for layer in layers}


def arch_lr_groups(model: nn.Module, arch_lr: float, split_logits: bool) -> list[tuple[float, list[nn.Parameter]]]:
    """(learning rate, logits) pairs for the optimizer: layer l's logits (its size logits with
    ``split_logits``, whose task logits get ``arch_lr``) at arch_lr * n_l / mean_l' n_l'.

    Logits of equal rate share one pair (layers of equal size: wav2vec2-base's 72 transformer
    weights have two sizes), so an optimizer group updates them together: one foreach update
    on a GPU instead of one per layer. In order of first appearance in module order.
    """
    scales = arch_lr_scales(model)
    by_rate: dict[float, list[nn.Parameter]] = {}
    for name, s in quantized_layers(model):
        parts = [(s.arch_logits, arch_lr), (s.size_logits, arch_lr * scales[name])] if split_logits \
            else [(s.arch_logits, arch_lr * scales[name])]
        for logits, lr in parts:
            by_rate.setdefault(lr, []).append(logits)
    return list(by_rate.items())
