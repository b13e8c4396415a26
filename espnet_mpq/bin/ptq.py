"""Post-training quantization of a trained 32-bit ESPnet model: no training, same outputs as a training run.

Usage:
    python -m espnet_mpq.bin.ptq --asr_train_config exp/asr_fp32/config.yaml \
        --asr_model_file exp/asr_fp32/valid.loss.ave.pth \
        --config conf/tuning/train_mpq_ptq4.yaml --output_dir exp/asr_ptq4

``--config`` is a compression config: its ``frontend_conf`` holds ``quantizer: ptq``
and ``quantizer_conf`` (bits, modules). The 32-bit config is copied with the
frontend switched to ``s3prl_mpq`` with that quantizer and the model to ``mpq``
(no teacher); the scales are initialised from the 32-bit weights (round to
nearest). Writes OUTPUT_DIR/config.yaml and OUTPUT_DIR/model.pth atomically;
decode them with espnet_mpq.bin.asr_inference, pack them with espnet_mpq.bin.export.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
from pathlib import Path

import torch
import yaml

from espnet_mpq.bin.cli import run
from espnet_mpq.core.transform import initialize_scales
from espnet_mpq.quantizers import build_config
from espnet_mpq.register import register


def ptq_config(fp32_config: dict, compression_config: dict) -> dict:
    """The 32-bit training config with the compression config's quantizer (must be ``ptq``)."""
    fconf = compression_config.get("frontend_conf", {})
    quantizer, qconf = fconf.get("quantizer"), fconf.get("quantizer_conf") or {}
    if quantizer != "ptq":
        raise ValueError(f"--config has frontend_conf.quantizer={quantizer!r}; this tool applies 'ptq' "
                         "(train the other quantizers with espnet_mpq.bin.asr_train)")
    build_config(quantizer, qconf)  # validate
    config = copy.deepcopy(fp32_config)
    config["frontend"] = "s3prl_mpq"
    config["frontend_conf"] = {**config.get("frontend_conf", {}), "quantizer": "ptq", "quantizer_conf": qconf}
    model_conf = {k: v for k, v in config.get("model_conf", {}).items()
                  if k not in ("kd_weight", "size_penalty_weight", "teacher_config", "teacher_model_file")}
    config["model"] = "mpq"
    config["model_conf"] = {**model_conf, "kd_weight": 0.0, "size_penalty_weight": 0.0}
    return config


def main(cmd=None):
    run(_main, cmd)


def _main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asr_train_config", type=Path, required=True, help="the 32-bit model's config.yaml")
    parser.add_argument("--asr_model_file", type=Path, required=True, help="the 32-bit model's .pth")
    parser.add_argument("--config", type=Path, required=True, help="compression config with quantizer: ptq")
    parser.add_argument("--output_dir", type=Path, required=True)
    args = parser.parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    for p in (args.asr_train_config, args.asr_model_file, args.config):
        if not p.is_file():
            parser.error(f"{p} does not exist")
    register()
    from espnet_mpq.asr.task import MpqASRTask

    with open(args.asr_train_config, encoding="utf-8") as f:
        fp32 = yaml.safe_load(f)
    with open(args.config, encoding="utf-8") as f:
        compression = yaml.safe_load(f) or {}
    try:
        config = ptq_config(fp32, compression)
    except ValueError as e:
        parser.error(str(e))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    config_path = args.output_dir / "config.yaml"
    tmp = args.output_dir / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    os.replace(tmp, config_path)
    model, _ = MpqASRTask.build_model_from_file(config_path, args.asr_model_file, "cpu")
    initialize_scales(model)
    tmp = args.output_dir / ".model.pth.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, args.output_dir / "model.pth")
    logging.info(f"wrote {config_path} and {args.output_dir / 'model.pth'}")


if __name__ == "__main__":
    main()
