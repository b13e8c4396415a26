"""The ``s3prl_mpq`` frontend: ESPnet's S3prlFrontend with a quantized upstream.

YAML:

    frontend: s3prl_mpq
    frontend_conf:
      upstream: hubert_local            # any s3prl upstream name (hub names download)
      path_or_url: exp/upstream/hubert.pt
      multilayer_feature: true
      quantizer: joint                  # none | ptq | uniform | joint | two_stage
      quantizer_conf: {candidate_bits: [2, 4, 8], target_avg_bits: 3.5}

ESPnet's nested form ``frontend_conf: {frontend_conf: {upstream: ..., path_or_url: ...}}``
is accepted too; the flat ``upstream`` / ``path_or_url`` keys take precedence.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional, Union

import torch
from typeguard import typechecked

from espnet2.asr.frontend.s3prl import S3prlFrontend
from espnet_mpq.quantizers import DOWNSTREAM, QuantizerConfig, apply_quantizer, build_config

# Layers of the frontend are named "frontend.<name>" in the ESPnet model (and in bit configs).
FRONTEND_PREFIX = "frontend."


class S3prlMpqFrontend(S3prlFrontend):
    """S3prlFrontend whose upstream layers are quantized by ``quantizer`` (see espnet_mpq.quantizers).

    forward: input (B, L) waveform, input_lengths (B,) -> feats (B, T, D), feats_lens (B,).
    """

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        frontend_conf: Optional[dict] = None,
        download_dir: Optional[str] = None,
        multilayer_feature: bool = False,
        layer: int = -1,
        upstream: Optional[str] = None,
        path_or_url: Optional[str] = None,
        quantizer: str = "none",
        quantizer_conf: Optional[dict] = None,
    ):
        config = build_config(quantizer, quantizer_conf)  # fail on bad options before loading anything
        conf = dict(frontend_conf or {})
        if upstream is not None:
            conf["upstream"] = upstream
        if path_or_url is not None:
            conf["path_or_url"] = path_or_url
        _check_upstream_name(conf.get("upstream"))
        super().__init__(fs=fs, frontend_conf=conf, download_dir=download_dir,
                         multilayer_feature=multilayer_feature, layer=layer)
        _follow_weights_device(self.upstream.upstream)
        self.quantizer_config: QuantizerConfig = config
        groups = [g for g in config.modules if g != DOWNSTREAM]
        names = apply_quantizer(config, self, groups, bit_config_prefix=FRONTEND_PREFIX)
        if config.layer_candidates() is not None and not names and groups:
            raise ValueError(f"quantizer '{config.name}' selected no layer of upstream {conf['upstream']!r} "
                             f"with modules={config.modules}")
        logging.info(f"s3prl_mpq: quantizer '{config.name}' on {len(names)} upstream layers")
        # reload_pretrained_parameters() (called by ESPnet's initialize) restores this state.
        self.pretrained_params = copy.deepcopy(self.upstream.state_dict())


def _follow_weights_device(expert: torch.nn.Module) -> None:
    """Keep an s3prl expert's ``device`` attribute equal to its weights' device.

    Some experts (``espnet_hubert_local``) fix ``self.device`` when built (CUDA whenever a
    GPU is visible) and move their inputs there in forward. Once ESPnet has moved the model
    elsewhere, e.g. decoding with ``--ngpu 0`` on a GPU machine, inputs and weights would
    sit on different devices; a forward pre-hook re-reads the device each call.
    """
    if not isinstance(getattr(expert, "device", None), torch.device):
        return

    def follow(module: torch.nn.Module, args) -> None:
        module.device = next(module.parameters()).device

    expert.register_forward_pre_hook(follow)


def _check_upstream_name(name: Optional[str]) -> None:
    from s3prl.nn import S3PRLUpstream

    available = S3PRLUpstream.available_names()
    if name not in available:
        local = [n for n in available if n.endswith("_local")]
        raise ValueError(
            f"s3prl upstream {name!r} is not known to s3prl: use a hub name (e.g. wav2vec2, hubert, "
            f"hubert_large_ll60k) or a local loader with path_or_url ({', '.join(local[:8])}, ...)"
        )
