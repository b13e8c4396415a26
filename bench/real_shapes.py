"""Accounting, packed size and step cost at the published wav2vec2-base and HuBERT-large sizes.

Usage:
    .venv/bin/python bench/real_shapes.py                       # both models, 2 s of audio per step
    .venv/bin/python bench/real_shapes.py --models wav2vec2_base --seconds 1 --repeats 2 --compile

For each model (random weights, the published layer sizes, built by s3prl's model
classes): quantizes every conv-extractor, positional-conv and transformer Linear
layer as a supernet over [2, 4, 8], times a supernet training step (forward +
backward + SGD) against the same step of the 32-bit model, fixes each layer's
bit-width (argmax of random logits: a mixed-precision assignment), exports the
packed file, and prints parameters, quantized parameters, average bits,
compression ratio from the accounting, packed file size and packed/accounted size.
The pretraining heads (final_proj, label embeddings, quantizer) are counted as the
float parameters they are. The last line is machine-readable JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from espnet_mpq.core.accounting import storage_report
from espnet_mpq.core.packed_file import save_packed
from espnet_mpq.core.transform import fix_bit_widths, prepare, quantized_layers
from espnet_mpq.quantizers import MODULE_GROUPS, select_layers
from espnet_mpq.upstream_builder import build_upstream_model

MODELS = {"wav2vec2_base": "wav2vec2", "hubert_large": "hubert"}
CANDIDATES = [2, 4, 8]


def step_time(model: torch.nn.Module, audio: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    times = []
    for i in range(repeats + 1):  # the first step warms up (and initialises scales)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(audio, mask=False, features_only=True)["x"].pow(2).mean().backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, seconds: float, repeats: int, compile: bool, out_dir: Path) -> dict:
    model = build_upstream_model(MODELS[name], name).train()
    audio = torch.randn(1, int(16000 * seconds))
    fp32_step = step_time(model, audio, repeats)
    layers = select_layers(model, list(MODULE_GROUPS))
    prepare(model, layer_bits={n: CANDIDATES for n in layers}, scale_init="max", compile=compile)
    supernet_step = step_time(model, audio, repeats)
    torch.manual_seed(0)
    for _, s in quantized_layers(model):
        s.arch_logits.data.normal_()
    fix_bit_widths(model)
    report = storage_report(model)
    size = save_packed(model, out_dir / f"{name}.mpq")
    return {
        "model": name,
        "params": report.total_params,
        "quantized_params": report.quantized_params,
        "avg_bits": round(report.average_bits, 4),
        "compression_ratio": round(report.compression_ratio, 4),
        "accounted_mb": round(report.size_mb, 3),
        "packed_mb": round(size / 1e6, 3),
        "packed_over_accounted": round(size / (report.total_bits / 8), 5),
        "fp32_step_s": round(fp32_step, 3),
        "supernet_step_s": round(supernet_step, 3),
        "step_time_ratio": round(supernet_step / fp32_step, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="fuse the quantization math (torch.compile)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.seconds} s of audio per step, "
          f"quantization math {'compiled' if args.compile else 'eager'}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = measure(name, args.seconds, args.repeats, args.compile, Path(tmp))
            results.append(r)
            print(f"{name}: {r['params']:,} params, {r['quantized_params']:,} quantized, {r['avg_bits']:.3f} avg bits, "
                  f"compression {r['compression_ratio']:.2f}x, accounted {r['accounted_mb']:.2f} MB, "
                  f"packed {r['packed_mb']:.2f} MB (x{r['packed_over_accounted']:.4f}), "
                  f"step {r['supernet_step_s']:.2f} s vs {r['fp32_step_s']:.2f} s 32-bit "
                  f"(ratio {r['step_time_ratio']:.2f})", flush=True)
    print("json " + json.dumps(results))


if __name__ == "__main__":
    main()
