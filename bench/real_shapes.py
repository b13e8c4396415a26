"""Accounting, packed size, step cost and peak memory at the published wav2vec2-base and HuBERT-large sizes.

Usage:
    .venv/bin/python bench/real_shapes.py                  # both models, batches 1 x 2 s and 4 x 4 s
    .venv/bin/python bench/real_shapes.py --models wav2vec2_base --batches 1x1 --repeats 1 --compile
    .venv/bin/python bench/real_shapes.py --device cuda --amp bf16 --compile

For each model (random weights, the published layer sizes, built by s3prl's model
classes): quantizes every conv-extractor, positional-conv and transformer Linear
layer as a supernet over [2, 4, 8] (the default quantizer: the fused op, eager, layer by
layer; ``--grouped`` adds ``grouped: true``, ``--compile`` the compiled per-layer op, ``--triton``
(CUDA only) the Triton kernel, ESPNET_MPQ_TRITON=1, layer by layer and with ``grouped: true``), fixes each layer's bit-width (argmax of random
logits: a mixed-precision assignment), exports the packed file, and prints
parameters, quantized parameters, average bits, compression ratio from the
accounting, packed file size and packed/accounted size. The pretraining heads
(final_proj, label embeddings, quantizer) are counted as the float parameters they are.

Step cost and memory: for each batch (``BxS`` = B utterances of S seconds) and mode
(32-bit, supernet), a fresh subprocess builds the model and runs one warm-up and
``--repeats`` timed training steps (forward + backward + SGD); it reports the median
step time and its peak memory: on the CPU the peak resident set size (ru_maxrss: the
whole process, model and optimiser included) and the resident size after the build,
on a GPU torch.cuda.max_memory_allocated and the memory allocated after the build.
The modes of a batch run back to back; with ``--rounds K`` they run K times in turn
(32-bit, supernet, 32-bit, supernet, ...), and each mode's step time is the median over
the rounds, its peak memory the largest. The 32-bit step of one process differs from the
next by up to a quarter on a shared 2-core machine, so one round's ratio is noisy; each
round's own ratio is printed too. The last line is machine-readable JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from espnet_mpq.core import triton_kernel
from espnet_mpq.core.accounting import storage_report
from espnet_mpq.core.packed_file import save_packed
from espnet_mpq.core.transform import fix_bit_widths, prepare, quantized_layers
from espnet_mpq.quantizers import MODULE_GROUPS, select_layers
from espnet_mpq.upstream_builder import build_upstream_model

MODELS = {"wav2vec2_base": "wav2vec2", "hubert_large": "hubert"}
CANDIDATES = [2, 4, 8]
SAMPLE_RATE = 16000


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


# Quantized modes -> prepare's (compile, grouped): the default (layer by layer), grouped, compiled,
# and with the Triton kernel (ESPNET_MPQ_TRITON=1; CUDA only) layer by layer and grouped.
QUANTIZED_MODES = {"supernet": (False, False), "supernet/grouped": (False, True), "compile": (True, False),
                   "supernet/triton": (False, False), "supernet/grouped_triton": (False, True)}
TRITON_MODES = ("supernet/triton", "supernet/grouped_triton")


def build(name: str, mode: str) -> torch.nn.Module:
    model = build_upstream_model(MODELS[name], name).train()
    if mode != "fp32":
        layers = select_layers(model, list(MODULE_GROUPS))
        compile, grouped = QUANTIZED_MODES[mode]
        prepare(model, layer_bits={n: CANDIDATES for n in layers}, scale_init="max", compile=compile, grouped=grouped)
    return model


def child(spec: dict) -> dict:
    """One mode in this process: median step time and peak memory (resident on a CPU, allocated on a GPU)."""
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    triton = spec["mode"] in TRITON_MODES
    os.environ["ESPNET_MPQ_TRITON"] = "1" if triton else "0"
    if triton and not (cuda and triton_kernel.kernels() is not None):
        raise SystemExit(f"mode {spec['mode']} needs a CUDA device and triton (device {device}): "
                         "it would time the broadcast")
    model = build(spec["model"], spec["mode"]).to(device)
    audio = torch.randn(spec["batch"], int(SAMPLE_RATE * spec["seconds"]), device=device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec["amp"])
    built_mb = torch.cuda.memory_allocated() / 1e6 if cuda else current_rss_mb()
    times = []
    for i in range(spec["repeats"] + 1):  # the first step warms up (and initialises scales, compiles)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext():
            loss = model(audio, mask=False, features_only=True)["x"].float().pow(2).mean()
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    if triton and triton_kernel.forward_calls == 0:
        raise SystemExit(f"mode {spec['mode']}: the Triton kernel never ran (the quantizer fell back to the broadcast)")
    peak_mb = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1e3) / 1e6
    return {**spec, "step_s": round(statistics.median(times), 6), "rss_built_mb": round(built_mb),
            "peak_rss_mb": round(peak_mb)}


def merge_rounds(runs: list[dict]) -> dict:
    """One mode's figures over rounds: the median step time, the largest peak and built memory."""
    return {**runs[0], "step_s": round(statistics.median(r["step_s"] for r in runs), 6),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "rss_built_mb": max(r["rss_built_mb"] for r in runs)}


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def accounting(name: str, out_dir: Path) -> dict:
    model = build(name, "supernet")
    model(torch.randn(1, SAMPLE_RATE // 10), mask=False, features_only=True)  # initialises the scales
    torch.manual_seed(0)
    for _, s in quantized_layers(model):
        s.arch_logits.data.normal_()
    fix_bit_widths(model)
    report = storage_report(model)
    size = save_packed(model, out_dir / f"{name}.mpq")
    return {
        "params": report.total_params,
        "quantized_params": report.quantized_params,
        "avg_bits": round(report.average_bits, 4),
        "compression_ratio": round(report.compression_ratio, 4),
        "accounted_mb": round(report.size_mb, 3),
        "packed_mb": round(size / 1e6, 3),
        "packed_over_accounted": round(size / (report.total_bits / 8), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", default=["1x2", "4x4"],
                        help="BxS: B utterances of S seconds per training step")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per mode (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the modes of a batch this many times in turn (a fresh process each)")
    parser.add_argument("--compile", action="store_true", help="also time the compiled fused quantizer")
    parser.add_argument("--only_compiled", action="store_true",
                        help="time 32-bit and the compiled quantizer only (not the eager one)")
    parser.add_argument("--grouped", action="store_true",
                        help="also time the grouped quantizer (grouped: true) as supernet/grouped")
    parser.add_argument("--triton", action="store_true",
                        help="also time the Triton kernel (ESPNET_MPQ_TRITON=1, CUDA only) as supernet/triton, and "
                             "with grouped: true (one Gumbel draw per step) as supernet/grouped_triton")
    parser.add_argument("--no_accounting", action="store_true",
                        help="skip the accounting and the packed file (CPU work; the step figures only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                        help="autocast the model (the quantizer itself always runs in float32)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        parser.error(f"--rounds {args.rounds} --repeats {args.repeats}: both must be at least 1")
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.triton and not args.device.startswith("cuda"):
        parser.error(f"--triton needs a CUDA device, not --device {args.device}")
    other = (["supernet/grouped"] if args.grouped else []) + (list(TRITON_MODES) if args.triton else [])
    modes = ["fp32", "compile"] if args.only_compiled else ["fp32", "supernet", *other] + (["compile"] if args.compile else [])
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "no GPU"
    print(f"torch {torch.__version__}, device {args.device} ({gpu}), autocast {args.amp}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"modes {modes}, median of {args.repeats} steps after a warm-up, {args.rounds} round(s)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            if args.no_accounting:
                r = {"model": name, "steps": []}
                print(f"{name}:", flush=True)
            else:
                r = {"model": name, **accounting(name, Path(tmp)), "steps": []}
                print(f"{name}: {r['params']:,} params, {r['quantized_params']:,} quantized, {r['avg_bits']:.3f} avg "
                      f"bits, compression {r['compression_ratio']:.2f}x, accounted {r['accounted_mb']:.2f} MB, "
                      f"packed {r['packed_mb']:.2f} MB (x{r['packed_over_accounted']:.4f})", flush=True)
            for batch in args.batches:
                b, s = batch.split("x")
                rounds = [{m: run_child({"model": name, "mode": m, "batch": int(b), "seconds": float(s),
                                         "repeats": args.repeats, "device": args.device, "amp": args.amp})
                           for m in modes} for _ in range(args.rounds)]
                runs = {m: merge_rounds([r[m] for r in rounds]) for m in modes}
                for m in modes[1:]:
                    step = {"batch": batch, "mode": m,
                            "fp32_step_s": runs["fp32"]["step_s"], "step_s": runs[m]["step_s"],
                            "step_time_ratio": round(runs[m]["step_s"] / runs["fp32"]["step_s"], 3),
                            "fp32_peak_rss_mb": runs["fp32"]["peak_rss_mb"], "peak_rss_mb": runs[m]["peak_rss_mb"],
                            "peak_rss_ratio": round(runs[m]["peak_rss_mb"] / runs["fp32"]["peak_rss_mb"], 3),
                            "fp32_rss_built_mb": runs["fp32"]["rss_built_mb"], "rss_built_mb": runs[m]["rss_built_mb"],
                            "round_ratios": [round(r[m]["step_s"] / r["fp32"]["step_s"], 3) for r in rounds]}
                    r["steps"].append(step)
                    print(f"  batch {batch} s, {m}: step {step['step_s'] * 1e3:.1f} ms vs {step['fp32_step_s'] * 1e3:.1f} ms 32-bit "
                          f"(ratio {step['step_time_ratio']:.2f}); peak memory {step['peak_rss_mb']} MB vs "
                          f"{step['fp32_peak_rss_mb']} MB 32-bit (ratio {step['peak_rss_ratio']:.2f}; after build "
                          f"{step['rss_built_mb']} vs {step['fp32_rss_built_mb']} MB)"
                          + (f"; ratio per round {step['round_ratios']}" if args.rounds > 1 else ""), flush=True)
            results.append(r)
    print(f"load average after {os.getloadavg()[0]:.1f}")
    print("json " + json.dumps(results))


if __name__ == "__main__":
    main()
