"""Quantization methods: one validated config dataclass each, in one registry.

YAML ``quantizer: NAME`` + ``quantizer_conf: {...}`` map onto ``build_config(NAME, conf)``:

    none       the 32-bit model
    ptq        round-to-nearest at ``bits`` for every selected layer, scales from the
               32-bit weights, no training
    uniform    quantization-aware training at one bit-width ``bits``
    joint      the one-stage method: bit-width search (Gumbel-Softmax supernet over
               ``candidate_bits``) for ``search_length`` epochs/optimizer steps, then the
               bit-widths are fixed by ``allocation`` and the same run trains on
    two_stage  stage 1 (no ``bit_config``): exactly joint's search (same schedule,
               allocation and target), run for ``search_length`` only (the recipe
               composes that run with ``compose_config --two_stage_search``);
               stage 2 (``bit_config: FILE``): quantization-aware training with the
               bit-widths stage 1 fixed, from the 32-bit model, as long as joint's run

Which layers are quantized is chosen by ``modules``, a list of groups:
``transformer`` (q/k/v/out projections, fc1, fc2 of every transformer layer and
post_extract_proj; in torchaudio's models, as ESPnet's HuBERT pre-training makes them:
attention q/k/v/out_proj, feed_forward intermediate_dense / output_dense and
feature_projection.projection), ``feature_extractor`` (the conv feature extractor),
``pos_conv`` (the positional convolution), ``downstream`` (every Linear/Conv1d of
the ESPnet model outside the frontend: encoder, decoder, CTC head).

The size penalty (joint, two_stage) for the expected average bits E (or the
expected model size E in MB, with ``size_budget_mb``) against the target T is

    hinge:   relu(E / T - 1)
    squared: (E / T - 1)^2

The temperature anneals exponentially, tau(p) = tau_start * (tau_end / tau_start)^(p / L),
with p the training progress and L = ``search_length`` (both in ``schedule_unit``:
fractional epochs, or optimizer steps for ``iteration``). Each layer's size logits
learn at arch_lr * n_l / mean n (see espnet_mpq.core.budget: Adam would otherwise erase
the size weighting), its task logits at arch_lr (``split_logits``, see
espnet_mpq.core.supernet). At the end of the search ``allocation: budget`` fixes the most
probable choice whose deployed size keeps the target (espnet_mpq.core.allocation);
``argmax`` fixes each layer at argmax(lambda) and may miss it.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml
from torch import nn

from espnet_mpq.core.allocation import ALLOCATIONS
from espnet_mpq.core.primitives import check_bits
from espnet_mpq.core.supernet import check_candidate_bits
from espnet_mpq.core.transform import QUANTIZABLE_TYPES, prepare

# Layer-name patterns (re.search) of each group, for both upstream families: s3prl's
# fairseq-style hubert/wav2vec2 (first pattern of each group) and torchaudio's
# HuBERT/wav2vec2 as ESPnet's HuBERT task builds it (encoder torchaudio_hubert, loaded
# through s3prl's espnet_hubert_local: ``...wav2vec2.encoder.transformer.layers.N.
# attention.q_proj``, ``feed_forward.intermediate_dense``, ...). Pre-training heads
# (final_proj, label embeddings) are never selected.
MODULE_GROUPS = {
    "transformer": (
        r"encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)$",
        r"post_extract_proj$",
        r"transformer\.layers\.\d+\.(attention\.(q_proj|k_proj|v_proj|out_proj)"
        r"|feed_forward\.(intermediate_dense|output_dense))$",
        r"encoder\.feature_projection\.projection$",
    ),
    "feature_extractor": (
        r"feature_extractor\.conv_layers\.\d+\.0$",
        r"feature_extractor\.conv_layers\.\d+\.conv$",
    ),
    "pos_conv": (
        r"encoder\.pos_conv\.0$",
        r"transformer\.pos_conv_embed\.conv$",
    ),
}
DOWNSTREAM = "downstream"
ALL_GROUPS = (*MODULE_GROUPS, DOWNSTREAM)

__all__ = [
    "QuantizerConfig",
    "NoneConfig",
    "PTQConfig",
    "UniformConfig",
    "JointConfig",
    "TwoStageConfig",
    "QUANTIZERS",
    "build_config",
    "read_bit_config",
    "write_bit_config",
    "select_layers",
    "apply_quantizer",
    "MODULE_GROUPS",
    "DOWNSTREAM",
]


def _fail(name: str, value, allowed: str):
    raise ValueError(f"quantizer_conf {name}={value!r} is not allowed: {allowed}")


@dataclass
class QuantizerConfig:
    """Options shared by every method."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True  # does the method need a training run?

    modules: list[str] = field(default_factory=lambda: ["transformer"])
    scale_init: str = "mse"  # initial scales: 'mse' (MSE-optimal clip) or 'max' (max-abs)
    compile: bool = False  # fuse the quantization math with torch.compile (faster steps, one-off compile)
    # Quantize the layers of a training step in a few grouped calls instead of one call per layer
    # (fewer, larger operators, for a host that dispatches to a GPU; more peak memory; RESULTS.md).
    grouped: bool = False

    def __post_init__(self):
        _check_types(self)
        if isinstance(self.modules, str):
            self.modules = [self.modules]
        if not isinstance(self.modules, list):
            _fail("modules", self.modules, f"give a list of groups from {list(ALL_GROUPS)}")
        unknown = [m for m in self.modules if m not in ALL_GROUPS]
        if unknown:
            _fail("modules", unknown, f"choose from {list(ALL_GROUPS)}")
        if not self.modules and self.layer_candidates() is not None:
            _fail("modules", self.modules, f"quantizer '{self.name}' needs at least one group of {list(ALL_GROUPS)} "
                  "(quantizer: none is the 32-bit model)")
        if self.scale_init not in ("mse", "max"):
            _fail("scale_init", self.scale_init, "use 'mse' or 'max'")
        if self.grouped and self.compile:
            _fail("grouped", self.grouped, "compile: true quantizes each layer on its own; set grouped: false "
                  "(the default) or compile: false")

    def layer_candidates(self) -> tuple[int, ...] | None:
        """Candidate bit-widths every selected layer gets (None: nothing is quantized)."""
        return None

    @property
    def searches(self) -> bool:
        return False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_NUMBER = (int, float)


def _check_types(config: QuantizerConfig) -> None:
    """Refuse a value whose type does not fit its field's annotation (bool, int, float, str, or None)."""
    for f in dataclasses.fields(config):
        value, ann = getattr(config, f.name), str(f.type)
        if value is None and "None" in ann:
            continue
        base = ann.replace(" | None", "")
        if base == "bool":
            ok, what = isinstance(value, bool), "true or false"
        elif base == "int":
            ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif base == "float":
            ok, what = isinstance(value, _NUMBER) and not isinstance(value, bool), "a number"
        elif base == "str":
            ok, what = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            _fail(f.name, value, f"it must be {what}" + (" or null" if "None" in ann else ""))


@dataclass
class NoneConfig(QuantizerConfig):
    name: ClassVar[str] = "none"
    trains: ClassVar[bool] = False


@dataclass
class UniformConfig(QuantizerConfig):
    name: ClassVar[str] = "uniform"
    bits: int = 4

    def __post_init__(self):
        super().__post_init__()
        try:
            check_bits(self.bits)
        except ValueError:
            _fail("bits", self.bits, "use an integer from 1 to 8")

    def layer_candidates(self):
        return (self.bits,)


@dataclass
class PTQConfig(UniformConfig):
    name: ClassVar[str] = "ptq"
    trains: ClassVar[bool] = False
    bits: int = 8


@dataclass
class JointConfig(QuantizerConfig):
    name: ClassVar[str] = "joint"

    candidate_bits: list[int] = field(default_factory=lambda: [2, 4, 8])
    # The deployed model's size, exactly one of: average bits over quantized weights
    # (kept within [T - 0.05, T]) or the whole model's size in MB (within [0.99 B, B]).
    target_avg_bits: float | None = None
    size_budget_mb: float | None = None
    penalty: str = "hinge"  # 'hinge': relu(E/T - 1); 'squared': (E/T - 1)^2
    tau_start: float = 1.0
    tau_end: float = 0.1
    search_length: float = 1.0  # search phase length (> 0), in schedule_unit; then bits are fixed
    schedule_unit: str = "epoch"  # 'epoch' or 'iteration' (optimizer steps)
    # Learning rate of the architecture logits, constant, no weight decay. With split_logits
    # (default) each layer's task logits learn at arch_lr and its size logits at arch_lr x
    # n_l / mean n (espnet_mpq.core.supernet); without, one set of logits at arch_lr x n_l / mean n.
    # On the recipe's model these defaults leave the distributions concentrated after a
    # one-epoch search (mean max-prob 0.89-0.97 at 4.0-1.5 bits; RESULTS.md, budget sweep).
    arch_lr: float = 0.2
    split_logits: bool = True
    allocation: str = "budget"  # final bits: 'budget' (keeps the target) or 'argmax'

    def __post_init__(self):
        super().__post_init__()
        try:
            self.candidate_bits = list(check_candidate_bits(self.candidate_bits))
        except (ValueError, TypeError) as e:
            raise ValueError(f"quantizer_conf candidate_bits={self.candidate_bits!r}: {e}") from None
        if self.size_budget_mb is not None and self.target_avg_bits is not None:
            _fail("size_budget_mb", self.size_budget_mb,
                  f"give target_avg_bits ({self.target_avg_bits}) or size_budget_mb, not both")
        if self.size_budget_mb is not None:
            if not self.size_budget_mb > 0:
                _fail("size_budget_mb", self.size_budget_mb, "use a size in MB > 0")
        elif self.target_avg_bits is None:
            _fail("target_avg_bits", None, "give target_avg_bits or size_budget_mb")
        elif not min(self.candidate_bits) <= self.target_avg_bits <= max(self.candidate_bits):
            _fail("target_avg_bits", self.target_avg_bits,
                  f"it must lie between the smallest and largest candidate {self.candidate_bits}")
        if self.allocation not in ALLOCATIONS:
            _fail("allocation", self.allocation, f"use one of {list(ALLOCATIONS)}")
        if self.penalty not in ("hinge", "squared"):
            _fail("penalty", self.penalty, "use 'hinge' or 'squared'")
        for key in ("tau_start", "tau_end", "arch_lr"):
            if not getattr(self, key) > 0:
                _fail(key, getattr(self, key), "it must be > 0")
        if not self.search_length > 0:
            _fail("search_length", self.search_length, "it must be > 0 (bits chosen from untrained logits "
                  "would be arbitrary; for fixed bits use quantizer uniform or two_stage with a bit_config)")
        if self.schedule_unit not in ("epoch", "iteration"):
            _fail("schedule_unit", self.schedule_unit, "use 'epoch' or 'iteration'")

    def layer_candidates(self):
        return tuple(self.candidate_bits)

    @property
    def searches(self) -> bool:
        return True

    def temperature(self, progress: float) -> float:
        """tau(p) = tau_start * (tau_end / tau_start)^(min(p, L) / L)."""
        frac = min(max(progress, 0.0), self.search_length) / self.search_length
        return self.tau_start * (self.tau_end / self.tau_start) ** frac

    def search_done(self, progress: float) -> bool:
        return progress >= self.search_length

    def size_target(self):
        """The target as an espnet_mpq.core.budget.SizeTarget."""
        from espnet_mpq.core.budget import SizeTarget

        return SizeTarget(avg_bits=self.target_avg_bits, size_mb=self.size_budget_mb)

    def size_penalty(self, expected, target):
        """relu(E/T - 1) or (E/T - 1)^2 for tensors/floats E, T."""
        import torch

        excess = expected / target - 1
        return torch.relu(excess) if self.penalty == "hinge" else excess**2


@dataclass
class TwoStageConfig(JointConfig):
    name: ClassVar[str] = "two_stage"
    bit_config: str | None = None  # stage 2: YAML {layer name: bits} written from stage 1

    def __post_init__(self):
        super().__post_init__()
        if self.bit_config is not None:
            if not Path(self.bit_config).is_file():
                _fail("bit_config", self.bit_config, "no such file (write it from the search run with "
                      "python -m espnet_mpq.bin.export --output_bit_config)")
            bad = {k: b for k, b in read_bit_config(self.bit_config).items() if b not in self.candidate_bits}
            if bad:
                name, bits = next(iter(bad.items()))
                _fail("bit_config", self.bit_config, f"layer {name!r} has {bits} bits ({len(bad)} such layers), "
                      f"which is not among candidate_bits {self.candidate_bits}")

    @property
    def searches(self) -> bool:
        return self.bit_config is None

    def layer_bits(self) -> dict[str, int] | None:
        return None if self.bit_config is None else read_bit_config(self.bit_config)


QUANTIZERS: dict[str, type[QuantizerConfig]] = {
    c.name: c for c in (NoneConfig, PTQConfig, UniformConfig, JointConfig, TwoStageConfig)
}


def build_config(name: str, conf: dict | None = None) -> QuantizerConfig:
    """The validated config of quantizer ``name``; unknown names or options are listed in the error."""
    if name not in QUANTIZERS:
        raise ValueError(f"quantizer {name!r} is not known: choose from {list(QUANTIZERS)}")
    cls = QUANTIZERS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(conf or {}) - set(allowed))
    if unknown:
        raise ValueError(f"quantizer '{name}' has no option(s) {unknown}: its options are {allowed}")
    return cls(**(conf or {}))


def read_bit_config(path: str | Path) -> dict[str, int]:
    """Read a bit config: YAML mapping layer name (relative to the ESPnet model) -> bits."""
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"bit config {path} is not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"bit config {path} must be a non-empty YAML mapping 'layer name: bits'")
    for name, bits in data.items():
        try:
            check_bits(bits)
        except ValueError as e:
            raise ValueError(f"bit config {path}, layer {name!r}: {e}") from None
    return data


def write_bit_config(path: str | Path, bits: dict[str, int]) -> None:
    """Write a bit config atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(dict(bits), sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def select_layers(module: nn.Module, groups: list[str], exclude_prefix: str | None = None) -> list[str]:
    """Names of the nn.Linear / nn.Conv1d layers of ``module`` in ``groups``.

    The ``downstream`` group selects every such layer whose name does not start with
    ``exclude_prefix`` (the frontend, when applied to a whole ESPnet model); the
    other groups select by the patterns of MODULE_GROUPS.
    """
    patterns = [re.compile(p) for g in groups for p in MODULE_GROUPS.get(g, ())]
    names = []
    for name, m in module.named_modules():
        if not isinstance(m, QUANTIZABLE_TYPES):
            continue
        if DOWNSTREAM in groups and not (exclude_prefix and name.startswith(exclude_prefix)):
            names.append(name)
        elif any(p.search(name) for p in patterns):
            names.append(name)
    return names


def apply_quantizer(
    config: QuantizerConfig, module: nn.Module, groups: list[str], bit_config_prefix: str = "",
    exclude_prefix: str | None = None,
) -> list[str]:
    """Quantize ``module``'s layers in ``groups`` as ``config`` says; return their names.

    Bit configs name layers relative to the whole ESPnet model: entries for this
    module carry ``bit_config_prefix`` (e.g. ``frontend.``), which is stripped.
    """
    candidates = config.layer_candidates()
    names = select_layers(module, groups, exclude_prefix)
    if candidates is None or not names:
        return []
    layer_bits = config.layer_bits() if isinstance(config, TwoStageConfig) else None
    if layer_bits is not None:
        mine = {k[len(bit_config_prefix):]: [b] for k, b in layer_bits.items() if k.startswith(bit_config_prefix)}
        if exclude_prefix:
            mine = {k: b for k, b in mine.items() if not k.startswith(exclude_prefix)}
        missing, extra = sorted(set(names) - set(mine)), sorted(set(mine) - set(names))
        if missing or extra:
            raise ValueError(
                f"bit_config {config.bit_config} does not match the model's quantized layers: "
                + (f"missing {[bit_config_prefix + n for n in missing[:5]]} " if missing else "")
                + (f"unknown {[bit_config_prefix + n for n in extra[:5]]}" if extra else "")
            )
        plan = mine
    else:
        plan = {n: list(candidates) for n in names}
    return prepare(module, layer_bits=plan, scale_init=config.scale_init, compile=config.compile,
                   split_logits=getattr(config, "split_logits", False), grouped=config.grouped)
