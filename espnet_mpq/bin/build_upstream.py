#!/usr/bin/env python3
"""Build a randomly initialised HuBERT / wav2vec 2.0 upstream as an s3prl checkpoint.

Usage:
    python -m espnet_mpq.bin.build_upstream --arch hubert --preset small --output exp/upstream/hubert_small.pt
    python -m espnet_mpq.bin.build_upstream --arch wav2vec2 --preset tiny --num_layers 3 --conv_channels 32 \\
        --output /tmp/w2v2_tiny.pt
    python -m espnet_mpq.bin.build_upstream --arch espnet_hubert --preset tiny --num_classes 100 \\
        --output exp/upstream/random/model.pth     # + exp/upstream/random/config.yaml

``--arch espnet_hubert`` writes ESPnet's HuBERT pre-training model (encoder
torchaudio_hubert) and its config.yaml beside it: s3prl's ``espnet_hubert_local``
upstream loads it, and ``python -m espnet2.bin.hubert_train --init_param`` pre-trains it.

The file loads through s3prl's ``hubert_local`` / ``wav2vec2_local`` upstreams
(path_or_url=the file), e.g. from ESPnet's S3prlFrontend:

    frontend: s3prl
    frontend_conf:
        frontend_conf: {upstream: hubert_local, path_or_url: exp/upstream/hubert_small.pt}
        multilayer_feature: true
"""
from __future__ import annotations

import argparse
import logging

from espnet_mpq.upstream_builder import (
    ARCHS,
    EXTRACTOR_MODES,
    PRESETS,
    checkpoint_num_params,
    save_upstream_checkpoint,
    standard_conv_layers,
)


def _true_or_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: use true or false")
    return text.lower() == "true"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build a randomly initialised HuBERT / wav2vec 2.0 upstream as an s3prl checkpoint.",
    )
    parser.add_argument("--arch", required=True, choices=ARCHS, help="model class")
    parser.add_argument(
        "--preset", default=None, choices=list(PRESETS), help="sizes to start from (default: the Base sizes)"
    )
    parser.add_argument("--output", required=True, help="checkpoint path to write")
    group = parser.add_argument_group("overrides of the preset (unset: keep the preset's value)")
    for name, help_text in (
        ("num_layers", "transformer layers"),
        ("embed_dim", "transformer width (= feature size)"),
        ("ffn_dim", "feed-forward inner width"),
        ("heads", "attention heads (must divide embed_dim)"),
        ("pos_conv_kernel", "kernel of the convolutional positional embedding"),
        ("pos_conv_groups", "groups of the convolutional positional embedding (must divide embed_dim)"),
        ("final_dim", "width of the pre-training heads"),
        ("num_classes", "HuBERT: k-means clusters the pre-training predicts"),
        ("seed", "random seed of the initialisation"),
    ):
        group.add_argument(f"--{name}", type=int, default=None, help=help_text)
    conv = group.add_mutually_exclusive_group()
    conv.add_argument("--conv_channels", type=int, default=None, help="channels of the standard 7-layer extractor")
    conv.add_argument(
        "--conv_layers",
        default=None,
        help="full extractor spec, a literal list of (channels, kernel, stride); strides must multiply to 320",
    )
    group.add_argument(
        "--extractor_mode", default=None, choices=EXTRACTOR_MODES, help="normalisation in the extractor"
    )
    group.add_argument(
        "--layer_norm_first",
        default=None,
        type=_true_or_false,
        help="pre-LN transformer: true or false",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    overrides = {
        name: value
        for name, value in vars(args).items()
        if name not in ("arch", "preset", "output", "conv_channels") and value is not None
    }
    if args.conv_channels is not None:
        overrides["conv_layers"] = standard_conv_layers(args.conv_channels)
    logging.info("Building %s (preset %s) with overrides %s", args.arch, args.preset, overrides)
    try:
        checkpoint = save_upstream_checkpoint(args.output, args.arch, args.preset, **overrides)
    except ValueError as e:
        parser.error(str(e))
    logging.info(
        "Wrote %s: %d parameters, model config %s",
        args.output,
        checkpoint_num_params(checkpoint),
        checkpoint.get("model_cfg", checkpoint.get("config", {}).get("encoder_conf")),
    )


if __name__ == "__main__":
    main()
