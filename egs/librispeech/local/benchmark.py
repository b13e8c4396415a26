#!/usr/bin/env python3
"""The paper's comparison, side by side: every system of conf/tuning/bench/, resumable, in pieces.

Usage:
    python local/benchmark.py                                   # all systems of conf/tuning/bench/
    python local/benchmark.py --systems ptq_4bit joint_2.0bit   # just these (the rest stays as it is)
    python local/benchmark.py --collect_only                    # rebuild the results from what exists
    python local/benchmark.py --ngpu 1 --num_train 6000         # other options go to every ./run.sh call

For the config set (default ``bench``, conf/sets/bench.sh) it runs ./run.sh stages 1-9
once (the 32-bit model; finished work is skipped), then for each system whose results
are missing ./run.sh --stage 10 --stop_stage 13 --mpq_config conf/tuning/bench/<system>.yaml.
After every system it rewrites, atomically:

    results/benchmark.json   {"systems": [{"name", "method", "avg_bits", "compression_ratio",
                              "compression_ratio_upstream", "packed_mb", "wer", "p_value",
                              "lossless", "compression_seconds", "device"}],
                              "lossless_ratio": {"uniform", "two_stage", "joint"},
                              "compression_time_ratio_two_stage_over_joint", "test_set", ...}
    results/wer_vs_ratio.png WER against whole-model compression ratio, one marker per method
    RESULTS.md               the table, the command, the machine and the date, the 32-bit
                             training curve, then results/analysis.md (hand-written) if present

A method's lossless_ratio is the highest whole-model compression ratio among its lossless
systems (null if none is lossless); the time ratio is the mean two_stage compression time
over the mean joint time. An interrupted system resumes (run.sh resumes training).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import platform
import shlex
import subprocess
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1]
FP32 = "fp32"


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def system_result(name: str, sys_dir: Path, test_set: str, score_name: str) -> dict | None:
    """The row of one system, or None while any of its result files is missing."""
    size = read_json(sys_dir / "size.json")
    score = read_json(sys_dir / f"decode_{test_set}" / "score.json")
    timing = read_json(sys_dir / "compression_time.json") if name != FP32 else {"seconds": 0, "device": "-"}
    if size is None or score is None or timing is None:
        return None
    s = score["systems"][score_name]
    method = "none" if name == FP32 else timing["quantizer"]
    return {
        "name": name,
        "method": method,
        "avg_bits": size["model"]["average_bits"] if size["model"]["quantized_params"] else 32.0,
        "compression_ratio": size["model"]["compression_ratio"],
        "compression_ratio_upstream": size["upstream"]["compression_ratio"],
        "packed_mb": size["packed_mb"],
        "wer": s["wer"],
        "p_value": None if s["mapsswe"] is None else s["mapsswe"]["p_value"],
        "lossless": True if s["lossless"] is None else s["lossless"],
        "compression_seconds": timing["seconds"],
        "device": timing["device"],
    }


def training_curve(train_dir: Path) -> list[dict]:
    """Per-epoch train loss, valid loss and valid CER, from the ESPnet Reporter in checkpoint.pth."""
    checkpoint = train_dir / "checkpoint.pth"
    if not checkpoint.is_file():
        return []
    import torch

    stats = torch.load(checkpoint, map_location="cpu", weights_only=False)["reporter"]["stats"]
    return [{"epoch": epoch, "train_loss": stats[epoch]["train"].get("loss"),
             "valid_loss": stats[epoch]["valid"].get("loss"), "valid_cer": stats[epoch]["valid"].get("cer_ctc")}
            for epoch in sorted(stats) if "valid" in stats[epoch]]


def summarise(rows: list[dict]) -> dict:
    lossless = {}
    for method in ("uniform", "two_stage", "joint"):
        ratios = [r["compression_ratio"] for r in rows if r["method"] == method and r["lossless"]]
        lossless[method] = max(ratios) if ratios else None
    times = {m: [r["compression_seconds"] for r in rows if r["method"] == m] for m in ("two_stage", "joint")}
    time_ratio = (statistics.mean(times["two_stage"]) / statistics.mean(times["joint"])
                  if times["two_stage"] and times["joint"] else None)
    return {"lossless_ratio": lossless, "compression_time_ratio_two_stage_over_joint": time_ratio}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"none": "*", "ptq": "s", "uniform": "o", "two_stage": "^", "joint": "D"}
    for method, marker in markers.items():
        pts = [r for r in rows if r["method"] == method]
        if pts:
            ax.scatter([r["compression_ratio"] for r in pts], [r["wer"] for r in pts], marker=marker, label=method)
            for r in pts:
                ax.annotate(r["name"], (r["compression_ratio"], r["wer"]), fontsize=6, alpha=0.7)
    ax.set_xlabel("compression ratio against 32-bit (whole model)")
    ax.set_ylabel("WER %")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def machine() -> str:
    """CPU model and core count (and the torch build), for the results' header."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    try:
        import torch

        build = f"torch {torch.__version__}"
    except ImportError:
        build = "torch not importable"
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores, {build}"


def results_markdown(result: dict, command: str, analysis: Path) -> str:
    """RESULTS.md: the table and the 32-bit training curve, then the hand-written ``analysis`` file."""
    lines = [
        "# Benchmark results (generated by local/benchmark.py from results/benchmark.json)",
        "",
        f"Command (in egs/librispeech): `{command}`",
        f"Config set: `{result['config_set']}` (conf/sets/{result['config_set']}.sh); test set `{result['test_set']}`.",
        f"Machine: {machine()}; "
        f"written {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        "| system | method | avg bits | ratio model | ratio upstream | packed MB | WER % | p (MAPSSWE) "
        "| lossless | compression s | device |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in result["systems"]:
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(f"| {r['name']} | {r['method']} | {r['avg_bits']:.2f} | {r['compression_ratio']:.2f} | "
                     f"{r['compression_ratio_upstream']:.2f} | {r['packed_mb']:.3f} | {r['wer']:.2f} | {p} | "
                     f"{'yes' if r['lossless'] else 'no'} | {r['compression_seconds']:.0f} | {r['device']} |")
    lr, tr = result["lossless_ratio"], result["compression_time_ratio_two_stage_over_joint"]
    lines += ["", "Lossless compression ratio (highest whole-model ratio among lossless systems): "
              + ", ".join(f"{m} {'-' if v is None else f'{v:.2f}x'}" for m, v in lr.items()),
              f"Compression time two_stage / joint: {'-' if tr is None else f'{tr:.2f}'}", "",
              "Plot: results/wer_vs_ratio.png. Lossless = not significantly worse than 32-bit "
              "(MAPSSWE, alpha = 0.05)."]
    curve = result.get("fp32_training_curve") or []
    if curve:
        lines += ["", "## The 32-bit model's training curve (ESPnet reporter, validation set)", "",
                  "| epoch | train loss | valid loss | valid CER % |", "| ---: | ---: | ---: | ---: |"]
        lines += [f"| {c['epoch']} | {c['train_loss']:.2f} | {c['valid_loss']:.2f} | {100 * c['valid_cer']:.1f} |"
                  for c in curve]
    if analysis.is_file():
        lines += ["", analysis.read_text(encoding="utf-8").rstrip()]
    return "\n".join(lines) + "\n"


def collect(exp: Path, systems: list[str], test_set: str, out_dir: Path, config_set: str, command: str) -> dict:
    rows = []
    fp32 = system_result(FP32, exp / "asr_fp32", test_set, FP32)
    if fp32 is not None:
        rows.append(fp32)
    for name in systems:
        row = system_result(name, exp / f"asr_mpq_{name}", test_set, name)
        if row is not None:
            rows.append(row)
    result = {"config_set": config_set, "test_set": test_set, "systems": rows, **summarise(rows),
              "fp32_training_curve": training_curve(exp / "asr_fp32")}
    write_atomic(out_dir / "benchmark.json", json.dumps(result, indent=2) + "\n")
    if rows:
        plot(rows, out_dir / "wer_vs_ratio.png")
    write_atomic(out_dir.parent / "RESULTS.md", results_markdown(result, command, out_dir / "analysis.md"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_set", default="bench")
    parser.add_argument("--systems", nargs="*", help="names in conf/tuning/bench/ (default: all)")
    parser.add_argument("--test_set", default="test_synth")
    parser.add_argument("--work", default="bench", help="run.sh --work (conf/sets/bench.sh sets bench)")
    parser.add_argument("--output_dir", type=Path, default=RECIPE / "results")
    parser.add_argument("--collect_only", action="store_true")
    args, run_options = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (benchmark) %(message)s")

    available = sorted(p.stem for p in (RECIPE / "conf/tuning/bench").glob("*.yaml"))
    systems = args.systems or available
    unknown = [s for s in systems if s not in available]
    if unknown:
        parser.error(f"unknown system(s) {unknown}: choose from {available}")
    exp = (RECIPE / args.work / "exp").resolve()
    # The command that reproduces the whole table (a run in pieces adds --systems to it).
    command = shlex.join(["python", "local/benchmark.py", *(["--config_set", args.config_set]
                                                         if args.config_set != "bench" else []), *run_options])
    run = ["./run.sh", "--config_set", args.config_set, "--work", args.work, *run_options]
    if not args.collect_only:
        logging.info("32-bit model (stages 1-9; finished work is skipped)")
        subprocess.run([*run, "--stop_stage", "9"], cwd=RECIPE, check=True)
        for name in systems:
            if system_result(name, exp / f"asr_mpq_{name}", args.test_set, name) is not None:
                logging.info(f"{name}: results exist, skipped")
                continue
            logging.info(f"{name}: stages 10-13")
            done = subprocess.run([*run, "--stage", "10", "--stop_stage", "13",
                                   "--mpq_config", f"conf/tuning/bench/{name}.yaml"], cwd=RECIPE)
            if done.returncode != 0:
                logging.error(f"{name}: run.sh failed (exit {done.returncode}); continuing with the others")
            collect(exp, available, args.test_set, args.output_dir, args.config_set, command)
    result = collect(exp, available, args.test_set, args.output_dir, args.config_set, command)
    for r in result["systems"]:
        print(f"{r['name']:<20} {r['method']:<10} bits {r['avg_bits']:6.2f} ratio {r['compression_ratio']:6.2f} "
              f"WER {r['wer']:6.2f} p {r['p_value'] if r['p_value'] is not None else '-'!s:>8} "
              f"lossless {r['lossless']!s:<5} {r['compression_seconds']:6.0f} s")
    print("json " + json.dumps({k: v for k, v in result.items() if k not in ("systems", "fp32_training_curve")}))


if __name__ == "__main__":
    main()
