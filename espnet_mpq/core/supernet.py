"""The weight-sharing bit-width supernet, as a weight parametrization.

One latent float weight W per layer is shared by every candidate bit-width
b_1 < ... < b_n. Each candidate has its own per-channel scale s_{b_i} and an
architecture logit lambda_i. In the search phase a training forward draws

    g = GumbelSoftmax(lambda, tau)                      (n,)
    W_eff = sum_i g_i * Q_{b_i}(W)                       same shape as W

and the layer applies W_eff once (one matmul or conv), whatever n is.
Expected bits: E_bits = sum_i softmax(lambda)_i * b_i (differentiable in lambda).

Split logits (``split_logits=True``): lambda = lambda_task + lambda_size, two parameters.
The sample g uses lambda_task + sg(lambda_size) and E_bits uses sg(lambda_task) + lambda_size
(sg: stop-gradient), so the task loss trains lambda_task only and the size penalty
lambda_size only. An optimiser that normalises each parameter's gradient (Adam) then
moves each by its own learning rate: the task part at one rate in every layer, the size
part at a rate scaled by the layer's size (espnet_mpq.core.budget.arch_lr_scales). With
one parameter, the size scaling also throttles the task signal of small layers.
Without the split, lambda_size stays 0 and untrained.

Modes (kept in buffers, so they survive a checkpoint and ``--resume``):
- search: Gumbel-Softmax sampling while training; eval uses the argmax candidate
  (the bit-width that would be deployed), without noise.
- fixed: ``fix(k)`` (default k = argmax(lambda)); W_eff = Q_{b_k}(W), no noise,
  lambda frozen. A layer with a single candidate (uniform precision, or a
  bit-width read from a bit config) is fixed from the start.

The mode is the float buffer ``fixed_onehot`` (n,): all zeros while searching,
one-hot at the fixed candidate. A float one-hot survives ESPnet's checkpoint
averaging (which averages float tensors and sums integer ones): checkpoints with
the same bit-widths average to the same one-hot, and checkpoints that disagree
average to a fraction, which loading refuses by name. The forward pass reads the
mode, the temperature and whether the scales are set from Python attributes that
mirror the buffers (set by ``fix``, ``set_temperature`` and loading), so a training
step makes no per-layer device-to-host reads. ``set_temperature`` sets the mirror only
(no device op per layer and step); the ``tau`` buffer is written from it when the state
is saved.

Scales are initialised lazily, from the weight the layer holds at its first
forward (so loading a 32-bit checkpoint after building the model, as ESPnet's
``--init_param`` does, initialises them from the real weights); ``initialize_scales``
does it explicitly.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from espnet_mpq.core.fused import compiled_fused_mix_fake_quantize, fused_mix_fake_quantize
from espnet_mpq.core.primitives import check_bits, init_scale

__all__ = ["MixedPrecisionWeight", "check_candidate_bits", "CheckpointAverageError"]


class CheckpointAverageError(ValueError):
    """A state dict whose mode buffer is not a one-hot: an average of checkpoints with different bits."""


def check_candidate_bits(candidate_bits: Sequence[int]) -> tuple[int, ...]:
    """Validate a candidate list: non-empty, strictly increasing, each bit-width in 1..8."""
    bits = tuple(candidate_bits)
    if not bits:
        raise ValueError("candidate_bits is empty: give at least one bit-width from 1 to 8")
    for b in bits:
        check_bits(b)
    if any(a >= b for a, b in zip(bits, bits[1:])):
        raise ValueError(
            f"candidate_bits {list(bits)} must be strictly increasing without duplicates, e.g. [2, 4, 8]"
        )
    return bits


class MixedPrecisionWeight(nn.Module):
    """Parametrization W -> W_eff over candidate bit-widths (see the module docstring).

    Args:
        weight: the layer's weight (C_out, ...); only its shape is used here.
        candidate_bits: strictly increasing bit-widths in 1..8.
        scale_init: ``mse`` or ``max`` (see ``primitives.init_scale``).
        compile: fuse the quantization math with torch.compile (same values, faster steps,
            a one-off compile per process).

    Example:
        >>> from torch.nn.utils import parametrize
        >>> layer = nn.Linear(16, 8)
        >>> parametrize.register_parametrization(
        ...     layer, "weight", MixedPrecisionWeight(layer.weight, [2, 4, 8]), unsafe=True)
        >>> layer(torch.randn(3, 16)).shape
        torch.Size([3, 8])
    """

    def __init__(
        self, weight: torch.Tensor, candidate_bits: Sequence[int], scale_init: str = "mse", compile: bool = False,
        split_logits: bool = False,
    ):
        super().__init__()
        bits = check_candidate_bits(candidate_bits)
        if scale_init not in ("max", "mse"):
            raise ValueError(f"scale_init {scale_init!r} is not allowed: use 'max' or 'mse'")
        self.candidate_bits = bits
        self.scale_init = scale_init
        self.compile = compile
        self.split_logits = split_logits
        n, channels = len(bits), weight.shape[0]
        self.register_buffer("bits", torch.tensor(bits, dtype=torch.float32))
        self.scales = nn.Parameter(torch.ones(n, channels))  # (n, C_out): s_{b_i}
        self.arch_logits = nn.Parameter(torch.zeros(n))  # (n,): lambda (lambda_task when split)
        self.size_logits = nn.Parameter(torch.zeros(n), requires_grad=False)  # (n,): lambda_size (0 unless split)
        self.register_buffer("tau", torch.tensor(1.0))  # written from _tau when the state is saved
        self.register_buffer("fixed_onehot", torch.zeros(n))  # (n,): zeros while searching
        self.register_buffer("scales_initialized", torch.tensor(False))
        # n_l, the weight's element count, and a copy on the logits' device (not saved; an integer,
        # which a cast of the model to half precision leaves exact), for
        # espnet_mpq.core.transform.expected_total_bits.
        self.n_weights = weight.numel()
        self.register_buffer("n_weights_on_device", torch.tensor(self.n_weights, dtype=torch.long), persistent=False)
        # Python mirrors of the buffers, read by forward (no host syncs).
        self._fixed: int | None = None
        self._tau = 1.0
        self._scales_ready = False
        # W_eff of this training forward, computed with other layers' in one grouped call
        # (espnet_mpq.core.transform.prepare(grouped=...)); None computes it here.
        self._step_weight: torch.Tensor | None = None
        self._set_trainable()
        if n == 1:
            self.fix(0)

    # ---- state -------------------------------------------------------------
    @property
    def is_fixed(self) -> bool:
        return self._fixed is not None

    def logits(self) -> torch.Tensor:
        """lambda (n,), detached: lambda_task + lambda_size."""
        return (self.arch_logits + self.size_logits).detach()

    @property
    def chosen_index(self) -> int:
        """The fixed candidate, or argmax(lambda) while searching (reads the logits)."""
        return self._fixed if self._fixed is not None else int(self.logits().argmax())

    @property
    def chosen_bits(self) -> int:
        return self.candidate_bits[self.chosen_index]

    def set_temperature(self, tau: float) -> None:
        if not tau > 0:
            raise ValueError(f"Gumbel-Softmax temperature {tau!r} is not allowed: it must be > 0")
        self._tau = float(tau)  # the buffer follows when the state is saved: no device op per step

    def fix(self, index: int | None = None) -> None:
        """Fix the bit-width to candidate ``index`` (default argmax(lambda)); freeze lambda."""
        k = self.chosen_index if index is None else index
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(self.candidate_bits):
            raise ValueError(f"candidate index {k!r} is out of range for candidates {list(self.candidate_bits)}")
        self.fixed_onehot.zero_()
        self.fixed_onehot[k] = 1.0
        self._fixed = k
        self._set_trainable()

    def expected_bits(self) -> torch.Tensor:
        """E_bits = sum_i softmax(lambda)_i b_i while searching; b_k once fixed. Scalar."""
        if self.is_fixed:
            return self.bits[self._fixed]
        logits = self.arch_logits.detach() + self.size_logits if self.split_logits else self.arch_logits
        return (F.softmax(logits, dim=0) * self.bits).sum()

    @torch.no_grad()
    def initialize_scales(self, weight: torch.Tensor) -> None:
        """s_{b_i} <- init_scale(W, b_i) for every candidate."""
        for i, b in enumerate(self.candidate_bits):
            self.scales[i].copy_(init_scale(weight, b, self.scale_init))
        self.scales_initialized.fill_(True)
        self._scales_ready = True

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        with torch.no_grad():
            self.tau.fill_(self._tau)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        legacy = state_dict.pop(prefix + "fixed_index", None)  # checkpoints of espnet_mpq <= 0.1
        if legacy is not None and prefix + "fixed_onehot" not in state_dict:
            k, n = int(legacy), len(self.candidate_bits)
            if not -1 <= k < n:
                raise CheckpointAverageError(
                    f"layer {prefix.split('.parametrizations.')[0]!r}: fixed_index {k} is out of range for "
                    f"candidates {list(self.candidate_bits)}; the checkpoint is an average of checkpoints "
                    "(ESPnet's *.ave.pth sums integer buffers): use a single checkpoint such as latest.pth"
                )
            state_dict[prefix + "fixed_onehot"] = torch.zeros(n) if k < 0 else F.one_hot(torch.tensor(k), n).float()
        state_dict.setdefault(prefix + "size_logits", torch.zeros_like(self.size_logits))  # espnet_mpq <= 0.1
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._sync_from_buffers(prefix)

    @torch.no_grad()
    def _sync_from_buffers(self, prefix: str = "") -> None:
        """Re-derive the Python mirrors (mode, tau, scales set) and requires_grad from the buffers."""
        onehot = self.fixed_onehot.detach().cpu()
        ones = int((onehot == 1).sum())
        if ones == 0 and bool((onehot == 0).all()):
            self._fixed = None
        elif ones == 1 and bool(((onehot == 0) | (onehot == 1)).all()):
            self._fixed = int(onehot.argmax())
        else:
            raise CheckpointAverageError(
                f"layer {prefix.split('.parametrizations.')[0]!r}: its bit-width state {onehot.tolist()} is not "
                f"a single choice among {list(self.candidate_bits)}: the checkpoint averages checkpoints with "
                "different bit-widths (e.g. epochs of the search); use a single checkpoint such as latest.pth, "
                "or average only epochs after the bit-widths were fixed"
            )
        self._tau = float(self.tau)
        self._scales_ready = bool(self.scales_initialized)
        self._set_trainable()

    def _set_trainable(self) -> None:
        """lambda trains while searching (lambda_size only when split)."""
        self.arch_logits.requires_grad_(self._fixed is None)
        self.size_logits.requires_grad_(self._fixed is None and self.split_logits)

    # ---- forward -----------------------------------------------------------
    def mixture_weights(self) -> torch.Tensor:
        """g (n,): Gumbel-Softmax sample while searching in training, else one-hot."""
        if self.training and not self.is_fixed:
            return F.gumbel_softmax(self.arch_logits + self.size_logits.detach(), tau=self._tau, hard=False)
        return F.one_hot(torch.tensor(self.chosen_index), len(self.candidate_bits)).to(self.scales)

    def step_inputs(self, weight: torch.Tensor) -> tuple[tuple[int, ...], torch.Tensor, bool]:
        """(bits, scales (n', C_out), sampling) of this forward: every candidate, and g to be drawn
        (``mixture_weights``), while searching in training; the chosen candidate and g = [1] when
        fixed or evaluating. Initialises the scales from W if they are not set yet."""
        if not self._scales_ready:
            if bool(self.scales_initialized):  # set by a load or by another owner of the buffer
                self._scales_ready = True
            else:
                self.initialize_scales(weight)
        if self.is_fixed or not self.training:
            k = self.chosen_index
            return self.candidate_bits[k:k + 1], self.scales[k:k + 1], False
        return self.candidate_bits, self.scales, True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """W (C_out, ...) -> W_eff (C_out, ...), computed in float32 (or the one given by a grouped call)."""
        if self._step_weight is not None:
            return self._step_weight
        bits, scales, sampling = self.step_inputs(weight)
        g = self.mixture_weights() if sampling else scales.new_ones(1)
        mix = compiled_fused_mix_fake_quantize if self.compile else fused_mix_fake_quantize
        with float32_math(weight.device.type):  # (no cast dispatched for a float32 weight)
            return mix(weight if weight.dtype == torch.float32 else weight.float(), scales, g, bits)

    def extra_repr(self) -> str:
        mode = f"fixed={self.chosen_bits}" if self.is_fixed else f"searching, tau={self._tau:.3g}"
        return f"candidate_bits={list(self.candidate_bits)}, {mode}"


def float32_math(device: str):
    """A context that turns autocast off on ``device`` (none where autocast does not exist, e.g. meta)."""
    if torch.amp.is_autocast_available(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()
