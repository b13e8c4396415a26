#!/usr/bin/env python3
"""Does the search keep the user's budget? joint's search at several targets, from one 32-bit model.

Usage:
    python bench/budget_sweep.py --fp32_dir egs/librispeech/exp/asr_fp32 --work bench/budget_sweep
    python bench/budget_sweep.py --fp32_dir ... --targets 4.0 3.5 --search_steps 60
    python bench/budget_sweep.py --fp32_dir ... --set frontend_conf.quantizer_conf.arch_lr=0.2   # an ablation

For each target T, an ESPnet training run (espnet_mpq.bin.asr_train) starts from the
32-bit model of ``--fp32_dir`` (its config.yaml names the data, tokens and upstream),
with the shared preset conf/quantizer/joint_3.0bit.yaml over candidates {1,2,3,4,8}
at target T, distilled from that model, and stops when the search ends: that is
stage 1 of two_stage, which is exactly joint's search phase
(compose_config --two_stage_search). By default the search lasts the preset's one
epoch; ``--search_steps N`` makes it N optimizer steps instead.

Per target it prints the expected, argmax and deployed average bits at the end of the
search (deployed: the bits the budget allocation fixed, from the checkpoint), the
mean max-prob of the layers' distributions (plain, and weighted by parameter count),
the CTC CER of ESPnet's validation after the bits were fixed, and the run's seconds. The last line is
JSON: {"targets": [...], "deployed_bits": [...], "max_abs_error": x} with x the
largest |deployed - T|, plus "within_window" (every deployed value in [T - 0.05, T])
and "strictly_decreasing". Finished runs are reused (delete --work to redo them).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "conf" / "quantizer" / "joint_3.0bit.yaml"
CANDIDATES = [1, 2, 3, 4, 8]
TARGETS = [4.0, 3.5, 3.0, 2.5, 2.0, 1.5]


def run_root(fp32_dir: Path) -> Path:
    """The directory the 32-bit run was started from (its config.yaml's relative paths start there)."""
    out = Path(yaml.safe_load((fp32_dir / "config.yaml").read_text())["output_dir"])
    fp32_dir = fp32_dir.resolve()
    return fp32_dir if out.is_absolute() else fp32_dir.parents[len(out.parts) - 1]


def search_config(fp32_dir: Path, target: float, search_steps: int | None, out: Path, extra: list[str]) -> Path:
    """The fp32 run's config with the joint preset at ``target`` as two_stage's stage 1 (search only)."""
    from espnet_mpq.bin.compose_config import compose, two_stage_search, write_yaml_atomic

    overrides = [
        "frontend_conf.quantizer=two_stage",
        f"frontend_conf.quantizer_conf.candidate_bits={CANDIDATES}",
        f"frontend_conf.quantizer_conf.target_avg_bits={target}",
        f"model_conf.teacher_config={(fp32_dir / 'config.yaml').resolve()}",
        f"model_conf.teacher_model_file={(fp32_dir / 'valid.loss.best.pth').resolve()}",
    ]
    if search_steps:
        overrides += ["frontend_conf.quantizer_conf.schedule_unit=iteration",
                      f"frontend_conf.quantizer_conf.search_length={search_steps}"]
    config = two_stage_search(compose(fp32_dir / "config.yaml", [PRESET], overrides + extra))
    for key in ("output_dir", "init_param", "resume", "required", "version", "distributed"):  # not options here
        config.pop(key, None)
    path = out / "search.yaml"
    write_yaml_atomic(path, config)
    return path


def run_search(fp32_dir: Path, target: float, search_steps: int | None, out: Path, extra: list[str]) -> float:
    """Train the search (resumable); return the wall-clock seconds of all its runs."""
    out.mkdir(parents=True, exist_ok=True)
    seconds_file = out / "seconds.json"
    if (out / ".done").exists():
        return json.loads(seconds_file.read_text())["seconds"]
    config = search_config(fp32_dir, target, search_steps, out, extra)
    start = time.time()
    with open(out / "train.log", "a") as log:
        proc = subprocess.run([sys.executable, "-m", "espnet_mpq.bin.asr_train", "--config", str(config),
                               "--output_dir", str(out), "--init_param", str(fp32_dir / "valid.loss.best.pth"),
                               "--resume", "true", "--ngpu", "0", "--use_matplotlib", "false"],
                              stdout=log, stderr=subprocess.STDOUT, cwd=run_root(fp32_dir))
    seconds = time.time() - start + (json.loads(seconds_file.read_text())["seconds"] if seconds_file.exists() else 0)
    seconds_file.write_text(json.dumps({"seconds": seconds}))
    if proc.returncode != 0:
        raise SystemExit(f"budget_sweep: the search at target {target} failed, see {out / 'train.log'}")
    (out / ".done").touch()
    return seconds


def valid_cer(train_log: Path) -> float | None:
    """The CTC character error rate of ESPnet's last validation in ``train_log`` (after the bits were fixed)."""
    results = [line for line in train_log.read_text(errors="replace").splitlines() if "epoch results:" in line]
    found = re.search(r"\[valid\].*?cer_ctc=([\d.]+)", results[-1]) if results else None
    return float(found.group(1)) if found else None


def figures(out: Path) -> dict:
    """Expected / argmax / deployed average bits, mean max-prob (plain and parameter-weighted) and
    valid CER of the finished search's checkpoint."""
    from espnet_mpq.asr.task import MpqASRTask
    from espnet_mpq.core.accounting import storage_report
    from espnet_mpq.core.budget import layers_of

    model, _ = MpqASRTask.build_model_from_file(out / "config.yaml", out / "latest.pth", "cpu")
    layers = layers_of(model)
    n = sum(layer.numel for layer in layers)
    expected = argmax = 0.0
    max_probs, weighted_max_prob = [], 0.0
    for layer in layers:
        s = layer.supernet
        p = torch.softmax(s.logits().double(), dim=0)
        expected += layer.numel * float((p * s.bits.double()).sum())
        argmax += layer.numel * s.candidate_bits[int(p.argmax())]
        max_probs.append(float(p.max()))
        weighted_max_prob += layer.numel * float(p.max())
    return {"expected_avg_bits": expected / n, "argmax_avg_bits": argmax / n,
            "deployed_avg_bits": storage_report(model).average_bits,
            "mean_max_prob": sum(max_probs) / len(max_probs), "weighted_max_prob": weighted_max_prob / n,
            "valid_cer": valid_cer(out / "train.log"), "all_fixed": all(l.supernet.is_fixed for l in layers)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32_dir", type=Path, required=True, help="the recipe's exp/asr_fp32 (config.yaml, "
                        "valid.loss.best.pth)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "budget_sweep", help="one run per target here")
    parser.add_argument("--targets", type=float, nargs="+", default=TARGETS)
    parser.add_argument("--search_steps", type=int, default=None,
                        help="search length in optimizer steps (default: the preset's 1 epoch)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="compose_config override of every search config (repeatable), e.g. for an ablation")
    args = parser.parse_args(argv)
    from espnet_mpq.register import register

    register()
    args.fp32_dir = args.fp32_dir.resolve()  # the searches run from the 32-bit run's directory
    for f in ("config.yaml", "valid.loss.best.pth"):
        if not (args.fp32_dir / f).is_file():
            raise SystemExit(f"budget_sweep: --fp32_dir {args.fp32_dir} has no {f} (run the recipe's stage 8 first)")
    print(f"# budget sweep: joint's search over candidates {CANDIDATES} from {args.fp32_dir}; "
          f"search {'%d optimizer steps' % args.search_steps if args.search_steps else '1 epoch'}"
          + (f"; overrides {args.overrides}" if args.overrides else ""))
    print(f"{'target':>6} {'expected':>9} {'argmax':>7} {'deployed':>9} {'max-prob':>9} {'weighted':>9} "
          f"{'valid-CER':>9} {'seconds':>8}")
    rows = []
    for target in args.targets:
        out = (args.work / f"target_{target:g}").resolve()
        seconds = run_search(args.fp32_dir, target, args.search_steps, out, args.overrides)
        row = {"target": target, "seconds": seconds, **figures(out)}
        rows.append(row)
        cer = "-" if row["valid_cer"] is None else f"{row['valid_cer']:.3f}"
        print(f"{target:6.2f} {row['expected_avg_bits']:9.3f} {row['argmax_avg_bits']:7.3f} "
              f"{row['deployed_avg_bits']:9.3f} {row['mean_max_prob']:9.3f} {row['weighted_max_prob']:9.3f} "
              f"{cer:>9} {seconds:8.0f}", flush=True)
    deployed = [r["deployed_avg_bits"] for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["target"])
    print(json.dumps({
        "targets": [r["target"] for r in rows],
        "deployed_bits": [round(d, 4) for d in deployed],
        "max_abs_error": round(max(abs(d - r["target"]) for d, r in zip(deployed, rows)), 4),
        "within_window": all(r["target"] - 0.05 <= d <= r["target"] for d, r in zip(deployed, rows)),
        "strictly_decreasing": all(deployed[a] > deployed[b] for a, b in zip(order, order[1:])),
        "mean_max_prob": [round(r["mean_max_prob"], 3) for r in rows],
        "weighted_max_prob": [round(r["weighted_max_prob"], 3) for r in rows],
        "valid_cer": [r["valid_cer"] for r in rows],
        "seconds": [round(r["seconds"]) for r in rows],
    }))


if __name__ == "__main__":
    main()
