"""Randomly initialised HuBERT / wav2vec 2.0 upstreams, built offline as s3prl checkpoints.

Three families (``arch``):

``hubert`` / ``wav2vec2``: s3prl's fairseq-style models. The checkpoint is the dict
that s3prl's ``hubert_local`` / ``wav2vec2_local`` upstreams read
(s3prl/upstream/{hubert,wav2vec2}/convert.py::load_converted_model):

    {"task_cfg": dict, "model_cfg": dict, "model_weight": state_dict,
     "dictionaries_symbols": [[str, ...]]}      # the last key for HuBERT only

Configs are plain dicts of str/int/float/bool, so ``torch.load(weights_only=True)``
reads the file. The model is built by s3prl's own classes (HubertModel,
Wav2Vec2Model), from the same configs the loader will merge, so the weights
always load strictly.

``espnet_hubert``: ESPnet's HuBERT pre-training model (espnet2.tasks.hubert, encoder
``torchaudio_hubert``: torchaudio's HuBERTPretrainModel), as
``python -m espnet2.bin.hubert_train`` writes it: the file is the ESPnet model's
state_dict and ``config.yaml`` beside it is the task config that rebuilds the model.
s3prl's ``espnet_hubert_local`` upstream reads the pair (path_or_url=the file; it
takes the config from beside the file), and ``hubert_train --init_param FILE`` starts
pre-training from it. ``build_upstream_checkpoint`` returns
``{"config": dict, "model_weight": state_dict}`` for it.

Example::

    >>> ckpt = build_upstream_checkpoint("hubert", "tiny", num_layers=1)
    >>> ckpt["model_cfg"]["encoder_layers"]
    1
    >>> checkpoint_num_params(ckpt) > 0
    True

and then ``s3prl.nn.S3PRLUpstream("hubert_local", path_or_url=path)`` or
ESPnet's ``S3prlFrontend(frontend_conf={"upstream": "hubert_local",
"path_or_url": path})`` load the saved file.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = [
    "ARCHS",
    "PRESETS",
    "UpstreamSpec",
    "standard_conv_layers",
    "make_spec",
    "build_upstream_model",
    "build_upstream_checkpoint",
    "save_upstream_checkpoint",
    "checkpoint_num_params",
]

ARCHS = ("hubert", "wav2vec2", "espnet_hubert")
ESPNET_HUBERT_CONFIG = "config.yaml"  # beside the model file, where espnet_hubert_local looks for it
# s3prl's hubert/wav2vec2 experts hard-code get_downsample_rates() == 320 (20 ms at 16 kHz).
REQUIRED_STRIDE = 320
SAMPLE_RATE = 16000
EXTRACTOR_MODES = ("default", "layer_norm")
# Published layout of the conv feature extractor: (kernel, stride) per layer, product of strides 320.
STANDARD_CONV_KERNEL_STRIDES = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2
# HuBERT: fairseq Dictionary specials + k-means cluster ids, as in the published
# iteration-2 checkpoints (500 clusters); they size the unused label_embs_concat.
HUBERT_SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
HUBERT_NUM_CLUSTERS = 500
HUBERT_LABEL_RATE = 50.0  # labels per second (one per 20 ms frame)
# wav2vec 2.0: Gumbel quantizer of the published models (2 groups x 320 codewords).
WAV2VEC2_LATENT_GROUPS = 2
WAV2VEC2_LATENT_VARS = 320


def standard_conv_layers(channels: int) -> tuple[tuple[int, int, int], ...]:
    """The published 7-layer conv extractor, (channels, kernel, stride) per layer, with ``channels``."""
    return tuple((channels, kernel, stride) for kernel, stride in STANDARD_CONV_KERNEL_STRIDES)


@dataclass(frozen=True)
class UpstreamSpec:
    """Architecture of one randomly initialised upstream; validates itself on creation."""

    arch: str  # "hubert" | "wav2vec2": which s3prl model class builds it
    num_layers: int  # transformer layers; the upstream exposes num_layers + 1 hidden states
    embed_dim: int  # transformer width = hidden size of every feature S3prlFrontend returns
    ffn_dim: int  # inner width of each layer's fc1 / fc2
    heads: int  # attention heads; must divide embed_dim
    conv_layers: tuple[tuple[int, int, int], ...]  # (channels, kernel, stride) per layer; strides multiply to 320
    pos_conv_kernel: int  # kernel of the grouped convolutional positional embedding
    pos_conv_groups: int  # its groups; must divide embed_dim
    final_dim: int  # width of the pre-training heads (final_proj, label embeddings / project_q)
    num_classes: int = HUBERT_NUM_CLUSTERS  # HuBERT: k-means clusters the pre-training predicts
    # "default": GroupNorm after the first conv only; "layer_norm": LayerNorm after every conv.
    extractor_mode: str = "default"
    layer_norm_first: bool = False  # pre-LN transformer (Large models) instead of post-LN (Base)
    seed: int = 0  # torch seed of the random initialisation

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not allowed: use one of {', '.join(ARCHS)}")
        sizes = (
            "num_layers", "embed_dim", "ffn_dim", "heads", "pos_conv_kernel", "pos_conv_groups", "final_dim",
            "num_classes",
        )
        for name in sizes:
            _check_positive_int(name, getattr(self, name))
        if self.embed_dim % self.heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}: pick heads dividing it"
            )
        if self.embed_dim % self.pos_conv_groups:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by pos_conv_groups {self.pos_conv_groups}: "
                "pick groups dividing it"
            )
        if self.arch == "wav2vec2" and self.final_dim % WAV2VEC2_LATENT_GROUPS:
            raise ValueError(
                f"final_dim {self.final_dim} is not allowed for wav2vec2: it must be divisible by "
                f"the {WAV2VEC2_LATENT_GROUPS} quantizer groups"
            )
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ValueError(
                f"extractor_mode {self.extractor_mode!r} is not allowed: use one of {', '.join(EXTRACTOR_MODES)}"
            )
        if not isinstance(self.layer_norm_first, bool):
            raise ValueError(f"layer_norm_first {self.layer_norm_first!r} is not allowed: use True or False")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed {self.seed!r} is not allowed: use an integer")
        object.__setattr__(self, "conv_layers", _parse_conv_layers(self.conv_layers))

    @property
    def normalize_waveform(self) -> bool:
        """Whether the upstream layer-normalises each waveform; the published LayerNorm-extractor models do."""
        return self.extractor_mode == "layer_norm"

    def model_cfg(self) -> dict[str, Any]:
        """fairseq-style model config (plain dict) for HubertConfig / Wav2Vec2Config."""
        cfg = {
            "extractor_mode": self.extractor_mode,
            "encoder_layers": self.num_layers,
            "encoder_embed_dim": self.embed_dim,
            "encoder_ffn_embed_dim": self.ffn_dim,
            "encoder_attention_heads": self.heads,
            "layer_norm_first": self.layer_norm_first,
            "conv_feature_layers": repr([tuple(layer) for layer in self.conv_layers]),
            "conv_bias": False,
            "conv_pos": self.pos_conv_kernel,
            "conv_pos_groups": self.pos_conv_groups,
            "final_dim": self.final_dim,
        }
        if self.arch == "hubert":
            cfg["label_rate"] = HUBERT_LABEL_RATE
        else:
            cfg.update(
                quantize_targets=True,
                latent_vars=WAV2VEC2_LATENT_VARS,
                latent_groups=WAV2VEC2_LATENT_GROUPS,
            )
        return cfg

    def espnet_hubert_config(self) -> dict[str, Any]:
        """ESPnet HubertTask config (plain dict) of a ``torchaudio_hubert`` model with these sizes.

        Raw waveforms in (``input_size: 1``, no frontend, no normalisation, as ESPnet's
        HuBERT recipes); the token list is the cluster ids then ``<unk>``, so token id =
        cluster id. Training options (masking, dropout, optimiser) are left to the
        pre-training config that is merged over this one.
        """
        return {
            "token_list": [str(i) for i in range(self.num_classes)] + ["<unk>"],
            "num_classes": self.num_classes,
            "input_size": 1,
            "frontend": None,
            "frontend_conf": {},
            "specaug": None,
            "specaug_conf": {},
            "normalize": None,
            "normalize_conf": {},
            "preencoder": None,
            "preencoder_conf": {},
            "encoder": "torchaudio_hubert",
            "encoder_conf": {
                "extractor_mode": "layer_norm" if self.extractor_mode == "layer_norm" else "group_norm",
                "extractor_conv_layer_config": [list(layer) for layer in self.conv_layers],
                "extractor_conv_bias": False,
                "encoder_embed_dim": self.embed_dim,
                "encoder_pos_conv_kernel": self.pos_conv_kernel,
                "encoder_pos_conv_groups": self.pos_conv_groups,
                "encoder_num_layers": self.num_layers,
                "encoder_num_heads": self.heads,
                "encoder_ff_interm_features": self.ffn_dim,
                "encoder_layer_norm_first": self.layer_norm_first,
                "final_dim": self.final_dim,
            },
            "model": "torchaudio",
            "model_conf": {},
            "init": None,
        }

    def task_cfg(self) -> dict[str, Any]:
        """fairseq-style task config (plain dict) for HubertPretrainingConfig / AudioPretrainingConfig."""
        cfg = {"sample_rate": SAMPLE_RATE, "normalize": self.normalize_waveform}
        if self.arch == "hubert":
            cfg["label_rate"] = HUBERT_LABEL_RATE
        return cfg


# Sizes only: any preset builds either arch. ``None`` = the s3prl/fairseq Base defaults.
_BASE = dict(
    num_layers=12, embed_dim=768, ffn_dim=3072, heads=12, conv_layers=standard_conv_layers(512),
    pos_conv_kernel=128, pos_conv_groups=16, final_dim=256,
)
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.2 M parameters: unit tests.
    "tiny": dict(
        num_layers=2, embed_dim=64, ffn_dim=256, heads=4, conv_layers=standard_conv_layers(64),
        pos_conv_kernel=16, pos_conv_groups=4, final_dim=32,
    ),
    # ~4 M parameters: the CPU recipe (a narrow extractor, since it dominates small models' time).
    "small": dict(
        num_layers=4, embed_dim=256, ffn_dim=1024, heads=4, conv_layers=standard_conv_layers(128),
        pos_conv_kernel=64, pos_conv_groups=16, final_dim=128,
    ),
    # Published wav2vec 2.0 / HuBERT Base sizes (~95 M).
    "wav2vec2_base": _BASE,
    # Published HuBERT Large sizes (~316 M): pre-LN, LayerNorm extractor, normalised waveforms.
    "hubert_large": dict(
        _BASE, num_layers=24, embed_dim=1024, ffn_dim=4096, heads=16, final_dim=768,
        extractor_mode="layer_norm", layer_norm_first=True,
    ),
}
DEFAULT_PRESET = "wav2vec2_base"


def make_spec(arch: str, preset: str | None = None, **overrides: Any) -> UpstreamSpec:
    """UpstreamSpec of ``preset`` (default: the Base sizes) for ``arch``, with ``overrides`` applied."""
    preset_name = DEFAULT_PRESET if preset is None else preset
    if preset_name not in PRESETS:
        raise ValueError(f"preset {preset!r} is not allowed: use one of {', '.join(PRESETS)}")
    allowed = [f.name for f in dataclasses.fields(UpstreamSpec) if f.name != "arch"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown upstream option(s) {unknown}: use any of {', '.join(allowed)}")
    return UpstreamSpec(arch=arch, **{**PRESETS[preset_name], **overrides})


def build_upstream_model(arch: str, preset: str | None = None, **overrides: Any) -> torch.nn.Module:
    """The freshly initialised s3prl model (HubertModel / Wav2Vec2Model) of ``preset``."""
    return _build_model(make_spec(arch, preset, **overrides))


def build_upstream_checkpoint(arch: str, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Checkpoint dict of a freshly initialised upstream; see the module docstring for its keys."""
    spec = make_spec(arch, preset, **overrides)
    model = _build_model(spec)
    if spec.arch == "espnet_hubert":
        return {"config": spec.espnet_hubert_config(), "model_weight": model.state_dict()}
    checkpoint = {
        "task_cfg": spec.task_cfg(),
        "model_cfg": spec.model_cfg(),
        "model_weight": model.state_dict(),
    }
    if spec.arch == "hubert":
        checkpoint["dictionaries_symbols"] = [_hubert_symbols(spec.num_classes)]
    return checkpoint


def save_upstream_checkpoint(
    path: str | os.PathLike, arch: str, preset: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """Build a checkpoint and write it to ``path`` atomically (temporary file, then rename); return it.

    For ``espnet_hubert`` the file holds the state_dict and ``config.yaml`` is written beside it
    (first, so that the model file never exists without its config).
    """
    checkpoint = build_upstream_checkpoint(arch, preset, **overrides)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arch == "espnet_hubert":
        import yaml

        _write_atomic(path.parent / ESPNET_HUBERT_CONFIG, lambda tmp: tmp.write_text(
            yaml.safe_dump(checkpoint["config"], sort_keys=False), encoding="utf-8"))
        _write_atomic(path, lambda tmp: torch.save(checkpoint["model_weight"], tmp))
    else:
        _write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))
    return checkpoint


def _write_atomic(path: Path, write) -> None:
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def checkpoint_num_params(checkpoint: dict[str, Any]) -> int:
    """Number of parameters in a checkpoint's model_weight (less ESPnet's ``global_step`` counter buffer)."""
    return sum(tensor.numel() for name, tensor in checkpoint["model_weight"].items() if not name.endswith("global_step"))


def _build_model(spec: UpstreamSpec) -> torch.nn.Module:
    """The s3prl model for ``spec``, built from the same merged configs the s3prl loader uses."""
    from s3prl.upstream.utils import merge_with_parent

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # keep the caller's RNG state
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        torch.manual_seed(spec.seed)
        if spec.arch == "espnet_hubert":
            import argparse
            import copy

            from espnet2.tasks.hubert import HubertTask

            return HubertTask.build_model(argparse.Namespace(**copy.deepcopy(spec.espnet_hubert_config())))
        if spec.arch == "hubert":
            from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

            return HubertModel(
                merge_with_parent(HubertConfig, spec.model_cfg()),
                merge_with_parent(HubertPretrainingConfig, spec.task_cfg()),
                [_hubert_symbols(spec.num_classes)],
            )
        from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

        return Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, spec.model_cfg()))


def _hubert_symbols(num_classes: int = HUBERT_NUM_CLUSTERS) -> list[str]:
    return list(HUBERT_SPECIAL_SYMBOLS) + [str(i) for i in range(num_classes)]


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} {value!r} is not allowed: use a positive integer")


def _parse_conv_layers(conv_layers: str | Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    """Validate a conv spec, given as (channels, kernel, stride) triples or their Python-literal string."""
    if isinstance(conv_layers, str):
        try:
            conv_layers = ast.literal_eval(conv_layers)
        except (ValueError, SyntaxError) as e:
            raise ValueError(
                f"conv_layers {conv_layers!r} is not allowed: write a literal list such as "
                f"{[(64, 10, 5), (64, 3, 2)]!r}"
            ) from e
    try:
        layers = tuple(tuple(layer) for layer in conv_layers)
    except TypeError as e:
        raise ValueError(
            f"conv_layers {conv_layers!r} is not allowed: use (channels, kernel, stride) triples"
        ) from e
    if not layers or any(
        len(layer) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in layer)
        for layer in layers
    ):
        raise ValueError(
            f"conv_layers {conv_layers!r} is not allowed: use a non-empty list of "
            "(channels, kernel, stride) triples of positive integers"
        )
    stride = math.prod(layer[2] for layer in layers)
    if stride != REQUIRED_STRIDE:
        raise ValueError(
            f"conv_layers {conv_layers!r} has a total stride of {stride}: s3prl's hubert/wav2vec2 "
            f"upstreams require the product of the strides to be {REQUIRED_STRIDE}"
        )
    return layers
