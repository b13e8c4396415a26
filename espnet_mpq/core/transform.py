"""Model-level transforms: put supernet weight parametrizations on selected layers, and act on them.

Quantization is applied to the ``weight`` of nn.Linear and nn.Conv1d modules with
``torch.nn.utils.parametrize``, so every read of ``module.weight`` returns W_eff,
including reads that bypass ``module.forward`` (the fused attention path of
s3prl's wav2vec2/HuBERT MultiheadAttention reads ``q_proj.weight`` directly).

The latent weight lives at ``<layer>.parametrizations.weight.original``. A state
dict saved from a float model (``<layer>.weight``, or a weight-normalised layer's
``weight_g`` / ``weight_v``, or torch's parametrized weight norm
``parametrizations.weight.original0`` / ``original1`` = g / v, as torchaudio's
HuBERT positional conv has it) still loads: ``prepare`` installs a load hook that
maps the float weight onto the latent weight.

Example:
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> names = prepare(model, candidate_bits=[2, 4, 8])
    >>> names
    ['0', '2']
    >>> set_temperature(model, 0.5); fix_bit_widths(model); sorted(bit_widths(model).values())
    [2, 2]
"""
from __future__ import annotations

import re
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from espnet_mpq.core import grouped as grouped_quantizer
from espnet_mpq.core import triton_kernel
from espnet_mpq.core.grouped import grouped_mix_fake_quantize
from espnet_mpq.core.supernet import MixedPrecisionWeight, check_candidate_bits, float32_math

QUANTIZABLE_TYPES = (nn.Linear, nn.Conv1d)
LATENT_SUFFIX = ".parametrizations.weight.original"
# torch.nn.utils.parametrizations.weight_norm's originals: g, then v.
WEIGHT_NORM_G, WEIGHT_NORM_V = "parametrizations.weight.original0", "parametrizations.weight.original1"

FilterFn = Callable[[nn.Module, str], bool]

__all__ = [
    "QUANTIZABLE_TYPES",
    "prepare",
    "quantized_layers",
    "set_temperature",
    "fix_bit_widths",
    "bit_widths",
    "expected_average_bits",
    "expected_total_bits",
    "initialize_scales",
    "name_filter",
    "strip",
    "supernet_of",
    "fold_weight_norm",
    "GroupedStep",
]


def name_filter(patterns: Sequence[str]) -> FilterFn:
    """A filter selecting quantizable modules whose qualified name matches any regex (re.search)."""
    compiled = [re.compile(p) for p in patterns]
    return lambda module, name: any(c.search(name) for c in compiled)


def _fold_weight_norm(module: nn.Module) -> None:
    """Replace a hook-based weight norm (weight_g, weight_v) by its current plain weight."""
    for hook in list(module._forward_pre_hooks.values()):
        if type(hook).__name__ == "WeightNorm" and getattr(hook, "name", None) == "weight":
            nn.utils.remove_weight_norm(module)
            return
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def prepare(
    model: nn.Module,
    candidate_bits: Sequence[int] | None = None,
    filter_fn: FilterFn | None = None,
    layer_bits: Mapping[str, Sequence[int]] | None = None,
    scale_init: str = "mse",
    compile: bool = False,
    split_logits: bool = False,
    grouped: bool = False,
) -> list[str]:
    """Make the selected layers of ``model`` quantized supernets, in place. Returns their names.

    Either ``candidate_bits`` (every selected layer gets these candidates) or
    ``layer_bits`` (name -> candidates, for exactly those layers; a single
    candidate fixes the layer's bit-width) must be given. ``filter_fn(module, name)``
    narrows the selection among nn.Linear / nn.Conv1d modules (default: all).
    A weight-normalised layer (wav2vec2's positional conv) has its weight norm
    folded into a plain weight first. ``compile`` fuses the quantization math and
    ``split_logits`` gives the task and the size their own logits (see ``MixedPrecisionWeight``).
    ``grouped`` computes the W_eff of a training forward of ``model`` in a few grouped calls
    (``GroupedStep``) instead of one call per layer. It excludes ``compile``.
    """
    if (candidate_bits is None) == (layer_bits is None):
        raise ValueError("give exactly one of candidate_bits or layer_bits")
    if compile and grouped:
        raise ValueError("grouped=True and compile=True exclude each other: compile fuses each layer's "
                         "quantizer on its own; choose one")
    if candidate_bits is not None:
        check_candidate_bits(candidate_bits)
    modules = dict(model.named_modules())
    if layer_bits is not None:
        missing = [n for n in layer_bits if not isinstance(modules.get(n), QUANTIZABLE_TYPES)]
        if missing:
            raise ValueError(
                f"bit config names layers that are not nn.Linear/nn.Conv1d modules of this model: {missing[:5]}"
                + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            )
        plan = {n: check_candidate_bits(b) for n, b in layer_bits.items()}
    else:
        plan = {
            n: tuple(candidate_bits)
            for n, m in modules.items()
            if isinstance(m, QUANTIZABLE_TYPES) and (filter_fn is None or filter_fn(m, n))
        }
    for name, bits in plan.items():
        module = modules[name]
        if supernet_of(module) is not None:
            raise ValueError(f"layer {name!r} is already quantized")
        _fold_weight_norm(module)
        supernet = MixedPrecisionWeight(module.weight, bits, scale_init, compile, split_logits).to(module.weight.device)
        parametrize.register_parametrization(module, "weight", supernet, unsafe=True)
    if plan and not getattr(model, "_mpq_float_state_hook", False):
        model._register_load_state_dict_pre_hook(_map_float_weights, with_module=True)
        model._mpq_float_state_hook = True
    if plan and grouped:
        step = GroupedStep(list(plan))
        model.register_forward_pre_hook(step.before)
        model.register_forward_hook(step.after, always_call=True)
    return list(plan)


def _chunks(sizes: list[int], budget: int) -> list[slice]:
    """Consecutive runs of items whose sizes add up to at most ``budget`` (an item larger than the
    budget alone)."""
    chunks, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > budget:
            chunks.append(slice(start, i))
            start, total = i, 0
        total += size
    return chunks + [slice(start, len(sizes))]


class GroupedStep:
    """Forward hooks of a prepared model: W_eff of its quantized layers in a few grouped calls.

    Before a training forward of the model, every layer prepared with it reports its
    candidates, scales and whether g is drawn (``MixedPrecisionWeight.step_inputs``). The
    layers are grouped by candidate set (and temperature); per group, g is drawn for all
    searching layers at once, g_l = GumbelSoftmax(lambda_l, tau) row by row of one (L, n)
    draw, and ``grouped_mix_fake_quantize`` computes their W_eff, one call per run of
    consecutive layers (in module order) whose n x elements fit in GROUPED_BLOCK_ELEMENTS:
    so a call keeps no more than one block of temporaries, and the gradients waiting for its
    backward (it runs once every layer of the run has its gradient) stay within that size
    too, near the per-layer op's peak memory. Where the Triton kernel takes the group's tensors
    (ESPNET_MPQ_TRITON=1, ``triton_kernel.usable``), each layer's W_eff is instead one launch of
    the kernel with its row of the shared draw: one draw per group, then a launch per layer (about
    11 operators per searching weight and step, where the kernel alone, which draws g layer by
    layer, dispatches about 20; bench/op_count.py). Each layer's
    parametrization returns its W_eff during that forward; the hook after the forward (run
    even when it raises) drops them. Evaluation forwards, forwards of a sub-module and calls
    outside the model's forward compute W_eff layer by layer, as without the hook.

    Layers are found by name in the module the hook is called on (a replica of the model, or a
    deep copy, finds its own), and a layer no longer quantized (``strip``) is skipped. A
    layer that the forward does not use gets zero gradients instead of none. Activation
    checkpointing inside the model would recompute its layers one by one, with other Gumbel
    draws than the grouped call's: use ``grouped=False`` with it.
    """

    def __init__(self, layers: list[str]):
        self.layers = layers

    def _supernets(self, model: nn.Module) -> list[tuple[MixedPrecisionWeight, torch.Tensor]]:
        found = []
        for name in self.layers:
            module = model.get_submodule(name)
            supernet = supernet_of(module)
            if supernet is not None:
                found.append((supernet, module.parametrizations.weight.original))
        return found

    def before(self, model: nn.Module, args) -> None:
        if not model.training:
            return
        layers = self._supernets(model)
        if not layers:
            return
        groups: dict[tuple, list] = {}
        for supernet, weight in layers:
            bits, scales, sampling = supernet.step_inputs(weight)
            groups.setdefault((bits, supernet._tau if sampling else None), []).append((supernet, weight, scales))
        with float32_math(layers[0][1].device.type):
            for (bits, tau), members in groups.items():
                supernets, weights, scales = zip(*members)
                if tau is None:
                    mixture = scales[0].new_ones(len(members), 1)
                else:
                    logits = torch.stack([s.arch_logits for s in supernets]) \
                        + torch.stack([s.size_logits for s in supernets]).detach()
                    mixture = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
                weights = [w if w.dtype == torch.float32 else w.float() for w in weights]
                if triton_kernel.usable(bits, mixture, *weights, *scales):
                    for supernet, weight, scale, g in zip(supernets, weights, scales, mixture.unbind(0)):
                        supernet._step_weight = triton_kernel.mix_fake_quantize(weight, scale, g, bits)
                    continue
                budget = grouped_quantizer.GROUPED_BLOCK_ELEMENTS
                for rows in _chunks([w.numel() * len(bits) for w in weights], budget):
                    outputs = grouped_mix_fake_quantize(weights[rows], scales[rows], mixture[rows], bits)
                    for supernet, out in zip(supernets[rows], outputs):
                        supernet._step_weight = out

    def after(self, model: nn.Module, args, output) -> None:
        for supernet, _ in self._supernets(model):
            supernet._step_weight = None


def _map_float_weights(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load hook: ``<layer>.weight`` from a float checkpoint -> ``<layer>.parametrizations.weight.original``.

    A float weight given explicitly wins over a latent weight in the same dict
    (ESPnet's --init_param merges the source over the model's own state).
    """
    for name, _ in quantized_layers(module):
        full = f"{prefix}{name}." if name else prefix
        for g_key, v_key in (("weight_g", "weight_v"), (WEIGHT_NORM_G, WEIGHT_NORM_V)):
            if full + v_key in state_dict and full + g_key in state_dict:
                g, v = state_dict.pop(full + g_key), state_dict.pop(full + v_key)
                state_dict[full + "weight"] = fold_weight_norm(g, v)
        if full + "weight" in state_dict:
            state_dict[full + LATENT_SUFFIX[1:]] = state_dict.pop(full + "weight")


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """W = g * v / ||v||, the norm taken over every dim but the one g spans (torch's weight_norm)."""
    spanned = [d for d in range(v.dim()) if g.shape[d] != 1]
    dim = spanned[0] if len(spanned) == 1 else -1
    return torch._weight_norm(v, g, dim)


def supernet_of(module: nn.Module) -> MixedPrecisionWeight | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, MixedPrecisionWeight):
                return p
    return None


def quantized_layers(model: nn.Module) -> Iterator[tuple[str, MixedPrecisionWeight]]:
    """(layer name, its supernet) for every quantized layer, in module order."""
    for name, module in model.named_modules():
        supernet = supernet_of(module)
        if supernet is not None:
            yield name, supernet


def set_temperature(model: nn.Module, tau: float) -> None:
    for _, s in quantized_layers(model):
        s.set_temperature(tau)


def fix_bit_widths(model: nn.Module) -> dict[str, int]:
    """Fix every searching layer to argmax(lambda); return the bit-width of every layer."""
    for _, s in quantized_layers(model):
        if not s.is_fixed:
            s.fix()
    return bit_widths(model)


def bit_widths(model: nn.Module) -> dict[str, int]:
    """Layer name -> its bit-width (the fixed one, or argmax(lambda) while searching)."""
    return {name: s.chosen_bits for name, s in quantized_layers(model)}


def expected_total_bits(supernets: Sequence[MixedPrecisionWeight]) -> torch.Tensor:
    """sum_l n_l E_bits^l over ``supernets`` (n_l: the weight's element count), a scalar on their device.

    The values and gradients of ``sum_l n_l * supernets[l].expected_bits()``, with a fixed
    number of operators per candidate set instead of a few per layer: the searching layers of
    one candidate set share one (L, n) softmax, E_l = sum_i softmax(lambda_l)_i b_i; fixed
    layers add the constant n_l b_l.
    """
    if not supernets:
        raise ValueError("expected_total_bits needs at least one quantized layer")
    fixed = 0.0
    groups: dict[tuple, list[MixedPrecisionWeight]] = {}
    for s in supernets:
        if s.is_fixed:
            fixed += s.n_weights * s.candidate_bits[s.chosen_index]
        else:
            groups.setdefault((s.candidate_bits, s.split_logits), []).append(s)
    total = supernets[0].bits.new_full((), fixed)
    for (_, split), members in groups.items():
        arch = torch.stack([s.arch_logits for s in members])  # (L, n)
        logits = arch.detach() + torch.stack([s.size_logits for s in members]) if split else arch
        expected = (F.softmax(logits, dim=-1) * members[0].bits).sum(-1)  # (L,); no matmul: autocast keeps fp32
        total = total + (expected * torch.stack([s.n_weights_on_device for s in members])).sum()
    return total


def expected_average_bits(model: nn.Module) -> torch.Tensor:
    """Parameter-weighted expected bits over quantized weights: sum_l n_l E_bits^l / sum_l n_l.

    Differentiable in the architecture logits. n_l is the number of weights of layer l.
    """
    supernets = [s for _, s in quantized_layers(model)]
    if not supernets:
        raise ValueError("the model has no quantized layers")
    return expected_total_bits(supernets) / sum(s.n_weights for s in supernets)


@torch.no_grad()
def initialize_scales(model: nn.Module, force: bool = False) -> None:
    """Initialise every quantized layer's scales from its current latent weight (once, unless ``force``)."""
    modules = dict(model.named_modules())
    for name, s in quantized_layers(model):
        if force or not bool(s.scales_initialized):
            s.initialize_scales(modules[name].parametrizations.weight.original)


def strip(model: nn.Module) -> nn.Module:
    """Remove the parametrizations, leaving each layer's weight at its current W_eff (in place)."""
    for name, module in list(model.named_modules()):
        if supernet_of(module) is not None:
            was_training = module.training
            module.eval()  # evaluate W_eff without Gumbel noise
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module.train(was_training)
    return model
