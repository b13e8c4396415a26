"""Export a trained model as a packed low-bit file, with its bit config and a size report.

Usage:
    python -m espnet_mpq.bin.export --asr_train_config exp/asr_joint/config.yaml \
        --asr_model_file exp/asr_joint/latest.pth --output exp/asr_joint/model.mpq \
        [--output_bit_config exp/asr_joint/bits.yaml] [--output_report exp/asr_joint/size.json]

Layers still searching are fixed first, by the quantizer's allocation rule (the
budget allocation keeps the target, as at the end of the search; a searching layer whose
logits are all equal, as in a 32-bit checkpoint given with a joint config, is
refused: it never searched); scales never initialised (post-training
quantization) are initialised from the weights. The
report gives, for the whole model and the SSL upstream, the parameter count,
average bits, exact storage bits and compression ratio against 32-bit, and the
packed file's size. Every output is written atomically, with mode 0644 (less the
umask); an export stopped by Ctrl-C or SIGTERM leaves no temporary file behind.

A model without quantized layers (the 32-bit model) has no bit config: none is
written (a bit config must name at least one layer), and a file left at
--output_bit_config by an earlier export is removed, as it describes another model.
A model file or config that cannot be used ends the export with one ``error:`` line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
from pathlib import Path

import torch

from espnet_mpq.bin.cli import run
from espnet_mpq.core.accounting import storage_report
from espnet_mpq.core.packed_file import save_packed
from espnet_mpq.core.transform import bit_widths, fix_bit_widths, initialize_scales, quantized_layers
from espnet_mpq.quantizers import write_bit_config
from espnet_mpq.register import register


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def refuse_unsearched(model, model_file: Path) -> None:
    """A searching layer whose architecture logits are all equal never searched: its argmax means nothing.

    That is what a model file without search state gives (a 32-bit checkpoint under a joint
    config loads, as post-training quantization needs): refuse rather than export arbitrary bits.
    """
    unsearched = [name for name, s in quantized_layers(model)
                  if not s.is_fixed and len(s.candidate_bits) > 1 and bool((s.logits() == s.logits()[0]).all())]
    if unsearched:
        raise ValueError(
            f"{model_file}: {len(unsearched)} searching layer(s) never learned a bit-width (equal architecture "
            f"logits, e.g. {unsearched[0]!r}): the file holds no search state; export the searching run's own "
            "checkpoint (e.g. its latest.pth)")


def export(config: Path, model_file: Path, output: Path | None, bit_config: Path | None, report: Path | None) -> dict:
    register()
    from espnet_mpq.asr.task import MpqASRTask

    model, _ = MpqASRTask.build_model_from_file(config, model_file, "cpu")
    model.eval()
    refuse_unsearched(model, model_file)
    initialize_scales(model)
    if getattr(model, "searching", False):  # as the search's end would: the quantizer's allocation rule
        model.finish_search()
    fix_bit_widths(model)
    whole, upstream = storage_report(model), storage_report(model.frontend.upstream)
    result = {
        "model": {k: v for k, v in whole.as_dict().items() if k != "bits_per_layer"},
        "upstream": {k: v for k, v in upstream.as_dict().items() if k != "bits_per_layer"},
        "bits_per_layer": bit_widths(model),
        "quantizer": getattr(getattr(model.frontend, "quantizer_config", None), "name", "none"),
    }
    if output is not None:
        size = save_packed(model, output, {"config": str(config), "source": str(model_file)})
        result["packed_bytes"] = size
        result["packed_mb"] = size / 1e6
        result["packed_over_accounting"] = size / (whole.total_bits / 8)
        logging.info(f"wrote {output}: {size / 1e6:.3f} MB (accounting {whole.size_mb:.3f} MB)")
    if bit_config is not None and result["bits_per_layer"]:
        write_bit_config(bit_config, result["bits_per_layer"])
        logging.info(f"wrote {bit_config}")
    elif bit_config is not None:
        logging.info(f"no quantized layers: no bit config written to {bit_config}")
        if bit_config.exists():
            bit_config.unlink()
            logging.info(f"removed {bit_config}, left by an earlier export")
    if report is not None:
        write_json(report, result)
        logging.info(f"wrote {report}")
    return result


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")  # unwinds through the writers' cleanup


def main(cmd=None):
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        run(_main, cmd)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asr_train_config", type=Path, required=True, help="the trained model's config.yaml")
    parser.add_argument("--asr_model_file", type=Path, required=True, help="the trained model's .pth")
    parser.add_argument("--output", type=Path, help="packed model file to write")
    parser.add_argument("--output_bit_config", type=Path, help="YAML {layer: bits} to write (two_stage)")
    parser.add_argument("--output_report", type=Path, help="JSON size report to write")
    args = parser.parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    for p in (args.asr_train_config, args.asr_model_file):
        if not p.is_file():
            parser.error(f"{p} does not exist")
    with torch.no_grad():
        result = export(args.asr_train_config, args.asr_model_file, args.output, args.output_bit_config,
                        args.output_report)
    m, u = result["model"], result["upstream"]
    print(f"model:    {m['total_params']} params, {m['average_bits']:.3f} avg bits, "
          f"compression {m['compression_ratio']:.2f}x, {m['size_mb']:.3f} MB")
    print(f"upstream: {u['total_params']} params, {u['average_bits']:.3f} avg bits, "
          f"compression {u['compression_ratio']:.2f}x")
    if "packed_mb" in result:
        print(f"packed:   {result['packed_mb']:.3f} MB ({result['packed_over_accounting']:.4f} x accounting)")


if __name__ == "__main__":
    main()
