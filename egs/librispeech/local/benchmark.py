#!/usr/bin/env python3
"""The paper's comparison at equal sizes: every system of conf/tuning/bench/ from one 32-bit model, in pieces.

Usage:
    python local/benchmark.py                                   # all systems of conf/tuning/bench/
    python local/benchmark.py --systems ptq_4bit joint_2.0bit   # just these (the rest stays as it is)
    python local/benchmark.py --collect_only                    # rebuild the results from what exists
    python local/benchmark.py --collect_only --results_md /tmp/RESULTS.md   # the table elsewhere
    python local/benchmark.py --ngpu 1 --nj 16                  # other options go to every ./run.sh call

For the config set (default ``bench``, conf/sets/bench.sh) it runs ./run.sh stages 1-9
once (the 32-bit model; finished work is skipped), then for each system whose results
are missing ./run.sh --stage 10 --stop_stage 13 --mpq_config conf/tuning/bench/<system>.yaml.
Each system resumes where it stopped (run.sh resumes training). After every system it
rewrites, atomically:

    results/benchmark.json
        "systems": one row per finished system (fp32, then by method and bits):
            name, method, seed, target_bits (the config's target_avg_bits, null where none),
            avg_bits (deployed), on_target (avg_bits in [target - 0.05, target]; null without
            a target), compression_ratio, compression_ratio_upstream, packed_mb,
            wer / p_value / lossless_per_condition ({"test_clean": x, "test_other": y}),
            lossless (on BOTH conditions), compression_seconds, device, timing_contended
            (the text of <system dir>/TIMING_CONTENDED, null without the file: a note,
            written by hand, that the compression ran beside other work on the machine)
        "test_set": the Kaldi set of each condition (test_synth / test_other_synth on the
            built-in corpus, test_clean / test_other on LibriSpeech)
        "lossless_ratio": {method: highest whole-model ratio among its lossless systems}
        "lossless_ratio_joint_over_uniform", "lossless_ratio_joint_over_two_stage"
        "compression_time_ratio_two_stage_over_joint": summed over the joint / two_stage
            pairs of equal target and seed, leaving out pairs with a contended timing
        "compression_time_pairs": the pairs summed; "compression_time_excluded": the pairs left
            out, with the contended system's note
        "off_target": systems whose deployed bits miss their target's window
        "comparisons": [{"kind", "a", "b", "p_value", "significant", "wer_a", "wer_b"}]
        "seed_spread": [{"systems", "seeds", "avg_bits", "wer", "difference", "lossless"}]
        "lowest_lossless_joint": {"name", "avg_bits", "bits_per_layer_png" (beside this file, null
            when stage 13 left none), "source" (the picture it copies)}
        "wall_clock_seconds": {"total", "pieces"}, "fp32_training_curve", "config_set"
    results/wer_vs_bits.png    WER against average bits, a line per method, a panel per condition
    results/wer_vs_ratio.png   the same against the whole-model compression ratio
    results/bits_per_layer_lowest_lossless_joint.png   run.sh stage 13's bits-per-layer
                               picture (<work>/exp/asr_mpq_<name>/bits_per_layer.png) of that system
    RESULTS.md                 the block between this config set's two marker comments,
                               <!-- benchmark bench: generated ... --> and <!-- benchmark bench: end -->
                               (inserted at the top when the file has none); the rest of the file,
                               other config sets' blocks included, is kept

A GPU-scaled run publishes beside the CPU table with its own set and results folder, e.g.
    python local/benchmark.py --config_set gpu --ngpu 1 --nj 16 --output_dir results/gpu

Rules. Lossless: not significantly worse than fp32 (MAPSSWE, alpha 0.05, as
espnet_mpq.bin.score decides it in run.sh stage 12) on test_clean AND on test_other.
The lossless ratios count each method's first-seed, on-target systems only: a repeat
with another seed (<name>_seedN) is the spread, not one more try, and an off-target
system is listed in "off_target", not counted. Comparisons: joint against two_stage at
the same target and seed, and joint against uniform where the joint target equals the
uniform bit-width; p-values per condition from espnet_mpq.bin.score on the two systems'
hypotheses (--baseline the joint system), kept in <work>/exp/comparisons/. The wall
clock is this driver's own: the seconds of every run.sh call it made, summed over
invocations in <work>/exp/benchmark_clock.json, which is rewritten every CLOCK_TICK_S
seconds while a call runs (a kill -9 loses at most that much of the call it kills).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import yaml

from espnet_mpq.bin import score as score_cli
from espnet_mpq.core.budget import AVG_BITS_TOLERANCE
from espnet_mpq.scoring.mapsswe import ALPHA

from decoding_note import DecodingNoteError, same_lm  # local/

RECIPE = Path(__file__).resolve().parents[1]
FP32 = "fp32"
# Condition -> its Kaldi set name on the built-in corpus, then on LibriSpeech (run.sh's roles).
CONDITIONS = {"test_clean": ("test_synth", "test_clean"), "test_other": ("test_other_synth", "test_other")}
METHODS = ("none", "ptq", "uniform", "two_stage", "joint")
ESPNET_DEFAULT_SEED = 0  # espnet2's --seed default, for a config that sets none
SEED_SUFFIX = re.compile(r"_seed(\d+)$")  # joint_2.5bit_seed2: a repeat of joint_2.5bit
BITS_PNG = "bits_per_layer_lowest_lossless_joint.png"
CLOCK = "benchmark_clock.json"
CONTENDED = "TIMING_CONTENDED"  # in a system's directory: its compression time is not comparable
CLOCK_TICK_S = 5.0
FP32_PIECE = "fp32 (stages 1-9)"
LOG2_TICKS = (1, 1.25, 1.5, 2, 2.5, 3, 4, 8)  # bits axis: the targets and the uniform bit-widths


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None if there is no such file; ValueError naming it if it is not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): repair or remove it "
                         "(every file here is written whole, so something else wrote it)") from None


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def system_dir(exp: Path, name: str) -> Path:
    return exp / ("asr_fp32" if name == FP32 else f"asr_mpq_{name}")


def first_seed_name(name: str) -> str:
    """joint_2.5bit_seed2 -> joint_2.5bit; a name without a seed suffix is its own."""
    return SEED_SUFFIX.sub("", name)


def condition_sets(fp32_dir: Path) -> dict[str, str]:
    """Condition -> Kaldi test set: the corpus's name that stage 9 decoded (built-in names until then)."""
    return {cond: next((s for s in names if (fp32_dir / f"decode_{s}").is_dir()), names[0])
            for cond, names in CONDITIONS.items()}


def on_target(avg_bits: float, target: float | None) -> bool | None:
    """Deployed average bits inside the promised window [T - AVG_BITS_TOLERANCE, T] (None: no target)."""
    if target is None:
        return None
    eps = 1e-9  # the allocation's own float sums
    return target - AVG_BITS_TOLERANCE - eps <= avg_bits <= target + eps


def system_result(name: str, sys_dir: Path, sets: dict[str, str]) -> dict | None:
    """The row of one system, or None while any of its result files is missing.

    Reads size.json (stage 13), decode_<set>/score.json of every condition (stage 12; the
    32-bit model's own from stage 9), compression_time.json and train.yaml (stage 10).
    """
    size = read_json(sys_dir / "size.json")
    scores = {cond: read_json(sys_dir / f"decode_{dset}" / "score.json") for cond, dset in sets.items()}
    train_yaml = sys_dir / "train.yaml"
    config = yaml.safe_load(train_yaml.read_text(encoding="utf-8")) if train_yaml.is_file() else None
    if name == FP32:
        timing, config = {"seconds": 0, "device": "-", "quantizer": "none"}, config or {}
    else:
        timing = read_json(sys_dir / "compression_time.json")
    if size is None or timing is None or config is None or any(s is None for s in scores.values()):
        return None
    entries = {cond: score["systems"][name] for cond, score in scores.items()}
    per_condition = {cond: True if s["lossless"] is None else s["lossless"] for cond, s in entries.items()}
    target = ((config.get("frontend_conf") or {}).get("quantizer_conf") or {}).get("target_avg_bits")
    avg_bits = size["model"]["average_bits"] if size["model"]["quantized_params"] else 32.0
    return {
        "name": name,
        "method": timing["quantizer"],
        "seed": config.get("seed", ESPNET_DEFAULT_SEED),
        "target_bits": target,
        "avg_bits": avg_bits,
        "on_target": on_target(avg_bits, target),
        "compression_ratio": size["model"]["compression_ratio"],
        "compression_ratio_upstream": size["upstream"]["compression_ratio"],
        "packed_mb": size["packed_mb"],
        "wer": {cond: s["wer"] for cond, s in entries.items()},
        "p_value": {cond: None if s["mapsswe"] is None else s["mapsswe"]["p_value"] for cond, s in entries.items()},
        "lossless_per_condition": per_condition,
        "lossless": all(per_condition.values()),
        "compression_seconds": timing["seconds"],
        "device": timing["device"],
        "timing_contended": contended_note(sys_dir),
    }


def contended_note(sys_dir: Path) -> str | None:
    """The note of <sys_dir>/TIMING_CONTENDED (its first line), or None without the file. The file
    marks the timing whatever it holds: bytes that are not UTF-8 read as U+FFFD."""
    path = sys_dir / CONTENDED
    if not path.is_file():
        return None
    return (path.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["(no reason given)"])[0]


def comparison_pairs(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(kind, joint system, other system) for the direct tests at equal size.

    joint_vs_two_stage: same target and same seed suffix; joint_vs_uniform: a first-seed
    joint system whose target equals the uniform bit-width (a uniform system's deployed
    average is its bit-width).
    """
    pairs = []
    for joint in (r for r in rows if r["method"] == "joint" and r["target_bits"] is not None):
        seed_tag = joint["name"][len(first_seed_name(joint["name"])):]
        for other in rows:
            same_seed = other["name"][len(first_seed_name(other["name"])):] == seed_tag
            if other["method"] == "two_stage" and same_seed and other["target_bits"] == joint["target_bits"]:
                pairs.append(("joint_vs_two_stage", joint["name"], other["name"]))
            elif (other["method"] == "uniform" and not seed_tag
                  and math.isclose(other["avg_bits"], joint["target_bits"])):
                pairs.append(("joint_vs_uniform", joint["name"], other["name"]))
    return pairs


def compare(exp: Path, kind: str, a: str, b: str, sets: dict[str, str]) -> dict | None:
    """MAPSSWE between systems a and b on every condition (espnet_mpq.bin.score, --baseline a).

    The score files go to <exp>/comparisons/<a>_vs_<b>/decode_<set>/score.json and are reused
    while newer than both hypothesis files. None (logged) when a condition cannot be scored.
    """
    out = {"kind": kind, "a": a, "b": b, "p_value": {}, "significant": {}, "wer_a": {}, "wer_b": {}}
    for cond, dset in sets.items():
        hyps = {n: system_dir(exp, n) / f"decode_{dset}" / "text" for n in (a, b)}
        result = exp / "comparisons" / f"{a}_vs_{b}" / f"decode_{dset}" / "score.json"
        if not result.is_file() or any(result.stat().st_mtime < h.stat().st_mtime for h in hyps.values()):
            argv = ["--ref", str(exp.parent / "dump" / "raw" / dset / "text"), "--baseline", a,
                    "--hyp", f"{a}={hyps[a]}", "--hyp", f"{b}={hyps[b]}", "--output_json", str(result)]
            try:
                score_cli.main(argv)
            except SystemExit:  # the scorer already printed its one-line refusal
                logging.error(f"{a} vs {b} on {dset}: espnet_mpq.bin.score {shlex.join(argv)} failed")
                return None
        systems = read_json(result)["systems"]
        out["p_value"][cond] = systems[b]["mapsswe"]["p_value"]
        out["significant"][cond] = systems[b]["mapsswe"]["significant"]
        out["wer_a"][cond], out["wer_b"][cond] = systems[a]["wer"], systems[b]["wer"]
    return out


def seed_spread(rows: list[dict]) -> list[dict]:
    """Each repeat (<name>_seedN) beside its first-seed system: WERs per condition and their difference."""
    by_name = {r["name"]: r for r in rows}
    spread = []
    for repeat in rows:
        first = by_name.get(first_seed_name(repeat["name"]))
        if first is None or first is repeat:
            continue
        pair = (first, repeat)
        spread.append({
            "systems": [r["name"] for r in pair], "seeds": [r["seed"] for r in pair],
            "avg_bits": [r["avg_bits"] for r in pair], "lossless": [r["lossless"] for r in pair],
            "wer": {c: [r["wer"][c] for r in pair] for c in first["wer"]},
            "difference": {c: repeat["wer"][c] - first["wer"][c] for c in first["wer"]},
        })
    return spread


def ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None else num / den


def summarise(rows: list[dict]) -> dict:
    """Lossless ratios (first-seed, on-target systems), their ratios, the time ratio, the flags."""
    counted = [r for r in rows if first_seed_name(r["name"]) == r["name"] and r["on_target"] is not False]
    lossless = {}
    for method in METHODS[1:]:
        ratios = [r["compression_ratio"] for r in counted if r["method"] == method and r["lossless"]]
        lossless[method] = max(ratios) if ratios else None
    seconds = {r["name"]: r["compression_seconds"] for r in rows}
    contended = {r["name"]: r.get("timing_contended") for r in rows}
    all_pairs = [(a, b) for kind, a, b in comparison_pairs(rows) if kind == "joint_vs_two_stage"]
    pairs = [(a, b) for a, b in all_pairs if not (contended[a] or contended[b])]
    excluded = [{"pair": [a, b], "reason": "; ".join(f"{n}: {contended[n]}" for n in (a, b) if contended[n])}
                for a, b in all_pairs if (a, b) not in pairs]
    time_ratio = ratio(sum(seconds[b] for _, b in pairs), sum(seconds[a] for a, _ in pairs)) if pairs else None
    joints = [r for r in counted if r["method"] == "joint" and r["lossless"]]
    lowest = min(joints, key=lambda r: r["avg_bits"]) if joints else None
    return {
        "lossless_ratio": lossless,
        "lossless_ratio_joint_over_uniform": ratio(lossless["joint"], lossless["uniform"]),
        "lossless_ratio_joint_over_two_stage": ratio(lossless["joint"], lossless["two_stage"]),
        "compression_time_ratio_two_stage_over_joint": time_ratio,
        "compression_time_pairs": [list(p) for p in pairs],
        "compression_time_excluded": excluded,
        "off_target": [{k: r[k] for k in ("name", "target_bits", "avg_bits")} for r in rows if r["on_target"] is False],
        "lowest_lossless_joint": None if lowest is None else {"name": lowest["name"], "avg_bits": lowest["avg_bits"]},
    }


def bits_picture(exp: Path, lowest: dict | None, out_dir: Path) -> None:
    """Copy run.sh stage 13's bits_per_layer.png of ``lowest`` into out_dir (and say where it came from)."""
    if lowest is None:
        (out_dir / BITS_PNG).unlink(missing_ok=True)  # no stale picture of an earlier collection
        return
    source = system_dir(exp, lowest["name"]) / "bits_per_layer.png"
    lowest["source"] = str(source.relative_to(RECIPE) if source.is_relative_to(RECIPE) else source)
    lowest["bits_per_layer_png"] = None
    if source.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out_dir / f".{BITS_PNG}.tmp")
        os.replace(out_dir / f".{BITS_PNG}.tmp", out_dir / BITS_PNG)
        lowest["bits_per_layer_png"] = BITS_PNG


def set_seconds(clock: Path, piece: str, seconds: float) -> None:
    """clock[piece] = seconds; the other pieces are kept."""
    pieces = read_json(clock) or {}
    pieces[piece] = round(seconds, 1)
    write_atomic(clock, json.dumps(pieces, indent=2) + "\n")


def wall_clock(clock: Path) -> dict:
    pieces = read_json(clock) or {}
    return {"total": round(sum(pieces.values()), 1), "pieces": pieces}


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


def plot(rows: list[dict], x_key: str, x_label: str, path: Path, log2_x: bool = False) -> None:
    """WER against ``x_key``, one panel per condition: a line per method over its first-seed
    systems (filled markers: lossless), repeats with other seeds as crosses, fp32 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(rows[0]["wer"])
    fig, axes = plt.subplots(1, len(conditions), figsize=(6 * len(conditions), 4.5), squeeze=False)
    for ax, cond in zip(axes[0], conditions):
        for r in (r for r in rows if r["method"] == "none"):
            ax.axhline(r["wer"][cond], color="black", linestyle="--", linewidth=1, label="fp32")
        for method in METHODS[1:]:
            firsts = sorted((r for r in rows if r["method"] == method and first_seed_name(r["name"]) == r["name"]),
                            key=lambda r: r[x_key])
            repeats = [r for r in rows if r["method"] == method and first_seed_name(r["name"]) != r["name"]]
            if not firsts and not repeats:
                continue
            (line,) = ax.plot([r[x_key] for r in firsts], [r["wer"][cond] for r in firsts], marker="o",
                              markerfacecolor="white", label=method)
            lossless = [r for r in firsts if r["lossless"]]
            ax.scatter([r[x_key] for r in lossless], [r["wer"][cond] for r in lossless], color=line.get_color(),
                       zorder=3)
            if repeats:
                ax.scatter([r[x_key] for r in repeats], [r["wer"][cond] for r in repeats], marker="x",
                           color=line.get_color(), label=f"{method}, other seed")
        if log2_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks(LOG2_TICKS, [f"{t:g}" for t in LOG2_TICKS])
        ax.set_title(f"{cond} (filled: lossless on every test set)")
        ax.set_xlabel(x_label)
        ax.set_ylabel("WER %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


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


def fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def results_markdown(result: dict, command: str, figures: str) -> str:
    """The generated block of RESULTS.md (without its markers); ``figures``: the results folder, relative to it."""
    conds = list(result["test_set"])
    rows = result["systems"]
    lines = [
        f"## Benchmark, config set `{result['config_set']}` (generated by local/benchmark.py from "
        f"{figures}/benchmark.json)",
        "",
        f"Command (in egs/librispeech): `{command}`",
        f"Config set: `{result['config_set']}` (conf/sets/{result['config_set']}.sh); test sets: "
        + ", ".join(f"{c} = `{s}`" for c, s in result["test_set"].items()) + ".",
        f"Machine: {machine()}; written {time.strftime('%Y-%m-%d %H:%M %Z')}; "
        f"wall clock of the benchmark's run.sh calls: {result['wall_clock_seconds']['total'] / 3600:.2f} h.",
        "",
        "| system | method | seed | target bits | avg bits | on target | ratio model | ratio upstream | packed MB | "
        + " | ".join(f"WER {c} | p {c}" for c in conds) + " | lossless | compression s | device |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | " + "---: | ---: | " * len(conds)
        + "--- | ---: | --- |",
    ]
    for r in rows:
        flag = {None: "-", True: "yes", False: "**no**"}[r["on_target"]]
        cells = " | ".join(f"{r['wer'][c]:.2f} | {fmt(r['p_value'][c], '.3g')}" for c in conds)
        lines.append(f"| {r['name']} | {r['method']} | {r['seed']} | {fmt(r['target_bits'])} | {r['avg_bits']:.3f} | "
                     f"{flag} | {r['compression_ratio']:.2f} | {r['compression_ratio_upstream']:.2f} | "
                     f"{r['packed_mb']:.3f} | {cells} | {'yes' if r['lossless'] else 'no'} | "
                     f"{r['compression_seconds']:.0f}{' (contended)' if r.get('timing_contended') else ''} | "
                     f"{r['device']} |")
    lr = result["lossless_ratio"]
    lines += [
        "",
        f"Lossless: not significantly worse than fp32 on every test set (MAPSSWE, alpha = {ALPHA}). "
        f"On target: deployed average bits in [target - {AVG_BITS_TOLERANCE}, target].",
        "",
        "Lossless compression ratio (highest whole-model ratio among a method's lossless first-seed, "
        "on-target systems): " + ", ".join(f"{m} " + ("-" if v is None else f"{v:.2f}x") for m, v in lr.items()) + ".",
        f"- joint / uniform: {fmt(result['lossless_ratio_joint_over_uniform'])} (paper: up to 1.7; "
        "issue 12's target >= 1.5)",
        f"- joint / two_stage: {fmt(result['lossless_ratio_joint_over_two_stage'])} (paper: up to 1.9; "
        "target > 1)",
        f"- compression time two_stage / joint: {fmt(result['compression_time_ratio_two_stage_over_joint'])} "
        f"(pairs of equal target and seed: {', '.join(b for _, b in result['compression_time_pairs']) or 'none'}; "
        "paper: 1.5-1.9; target >= 1.5)"
        + "".join(f"; left out, contended: {' / '.join(e['pair'])} ({e['reason']})"
                  for e in result["compression_time_excluded"]),
        "- off target (not counted in the lossless ratios): "
        + (", ".join(f"{o['name']} ({o['avg_bits']:.3f} bits for target {o['target_bits']})"
                     for o in result["off_target"]) or "none"),
    ]
    if result["comparisons"]:
        lines += ["", "### Direct comparisons at equal size (MAPSSWE between the two systems)", "",
                  "| a | b | " + " | ".join(f"WER a {c} | WER b {c} | p {c}" for c in conds) + " |",
                  ("| --- | --- | " + "---: | ---: | ---: | " * len(conds)).rstrip()]
        lines += [f"| {c['a']} | {c['b']} | " + " | ".join(
            f"{c['wer_a'][d]:.2f} | {c['wer_b'][d]:.2f} | {c['p_value'][d]:.3g}" for d in conds) + " |"
            for c in result["comparisons"]]
    if result["seed_spread"]:
        lines += ["", "### Run-to-run spread (the same system with two seeds)", "",
                  "| systems | seeds | avg bits | " + " | ".join(f"WER {c} | difference {c}" for c in conds) + " |",
                  ("| --- | --- | --- | " + "--- | ---: | " * len(conds)).rstrip()]
        lines += [f"| {' / '.join(s['systems'])} | {' / '.join(map(str, s['seeds']))} | "
                  f"{' / '.join(f'{b:.3f}' for b in s['avg_bits'])} | " + " | ".join(
                      f"{s['wer'][c][0]:.2f} / {s['wer'][c][1]:.2f} | {s['difference'][c]:+.2f}" for c in conds) + " |"
                  for s in result["seed_spread"]]
    lines += ["", f"Plots: {figures}/wer_vs_bits.png (WER against average bits), {figures}/wer_vs_ratio.png "
              "(against the whole-model compression ratio)."]
    lowest = result["lowest_lossless_joint"]
    if lowest is not None:
        where = (f"![bits per layer of {lowest['name']}]({figures}/{lowest['bits_per_layer_png']})"
                 if lowest["bits_per_layer_png"] else f"`{lowest['source']}` (missing when collected)")
        lines += ["", f"Bits per layer of the lowest lossless joint system, {lowest['name']} "
                  f"({lowest['avg_bits']:.3f} bits): {where}"]
    curve = result.get("fp32_training_curve") or []
    if curve:
        lines += ["", "### The 32-bit model's training curve (ESPnet reporter, validation set)", "",
                  "| epoch | train loss | valid loss | valid CER % |", "| ---: | ---: | ---: | ---: |"]
        lines += [f"| {c['epoch']} | {c['train_loss']:.2f} | {c['valid_loss']:.2f} | {100 * c['valid_cer']:.1f} |"
                  for c in curve]
    return "\n".join(lines) + "\n"


def markers(config_set: str) -> tuple[str, str]:
    """The comments that open and close the generated block of ``config_set`` in RESULTS.md."""
    return (f"<!-- benchmark {config_set}: generated by local/benchmark.py from its benchmark.json; edit outside -->",
            f"<!-- benchmark {config_set}: end -->")


def replace_block(text: str, block: str, config_set: str) -> str:
    """``text`` with the part between ``config_set``'s markers replaced by ``block``; without
    them, the marked block is put on top of ``text``, which is kept whole."""
    opening, closing = markers(config_set)
    marked = f"{opening}\n{block.rstrip()}\n{closing}\n"
    begin, end = text.find(opening), text.find(closing)
    if begin < 0 and end < 0:
        return marked + ("\n" + text if text else "")
    if begin < 0 or end < begin:
        raise ValueError(f"RESULTS.md has one benchmark marker without the other, or the end before the start: "
                         f"fix it by hand ({opening!r} ... {closing!r})")
    return text[:begin] + marked + text[end + len(closing):].removeprefix("\n")


def collect(exp: Path, systems: list[str], out_dir: Path, results_md: Path, config_set: str, command: str) -> dict:
    """Rows of fp32 and of every finished system, the comparisons, the summary; writes every output."""
    sets = condition_sets(system_dir(exp, FP32))
    rows = [row for name in [FP32, *systems] if (row := system_result(name, system_dir(exp, name), sets))]
    rows.sort(key=lambda r: (METHODS.index(r["method"]), -(r["target_bits"] or r["avg_bits"]), r["name"]))
    try:  # every WER of the table from the same decoding: one LM or none
        lm = same_lm([system_dir(exp, r["name"]) / f"decode_{dset}" for r in rows for dset in sets.values()])
    except DecodingNoteError as error:
        raise SystemExit(f"benchmark: {error}") from None
    comparisons = [c for pair in comparison_pairs(rows) if (c := compare(exp, *pair, sets)) is not None]
    result = {"config_set": config_set, "test_set": sets, "lm_file": lm, "systems": rows, **summarise(rows),
              "comparisons": comparisons, "seed_spread": seed_spread(rows),
              "wall_clock_seconds": wall_clock(exp / CLOCK),
              "fp32_training_curve": training_curve(system_dir(exp, FP32))}
    bits_picture(exp, result["lowest_lossless_joint"], out_dir)
    write_atomic(out_dir / "benchmark.json", json.dumps(result, indent=2) + "\n")
    if rows:
        plot(rows, "avg_bits", "average bits of the quantized weights", out_dir / "wer_vs_bits.png", log2_x=True)
        plot(rows, "compression_ratio", "compression ratio against 32-bit (whole model)", out_dir / "wer_vs_ratio.png")
    old = results_md.read_text(encoding="utf-8") if results_md.is_file() else ""
    figures = os.path.relpath(out_dir, results_md.parent)
    write_atomic(results_md, replace_block(old, results_markdown(result, command, figures), config_set))
    return result


def config_set_work(config_set: str) -> str:
    """The ``work`` directory conf/sets/<config_set>.sh gives run.sh (run.sh's default "." when none)."""
    script = f'. "conf/sets/{config_set}.sh" && echo "${{work:-.}}"'
    return subprocess.run(["bash", "-c", script], cwd=RECIPE, capture_output=True, text=True,
                          check=True).stdout.strip()


def timed_run(command: list[str], clock: Path, piece: str, tick_s: float = CLOCK_TICK_S) -> int:
    """Run ``command`` in the recipe; clock[piece] += its wall clock, whatever happens.

    The piece is rewritten every ``tick_s`` seconds while the command runs (from a thread),
    so a driver killed without warning under-reports by at most ``tick_s``.
    """
    before = (read_json(clock) or {}).get(piece, 0)
    t0 = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(tick_s):
            set_seconds(clock, piece, before + time.monotonic() - t0)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        return subprocess.run(command, cwd=RECIPE).returncode
    finally:
        done.set()
        ticker.join()
        set_seconds(clock, piece, before + time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_set", default="bench")
    parser.add_argument("--systems", nargs="*", help="names in conf/tuning/bench/ (default: all)")
    parser.add_argument("--work", help="run.sh --work (default: the config set's)")
    parser.add_argument("--output_dir", type=Path, default=RECIPE / "results")
    parser.add_argument("--results_md", type=Path, default=RECIPE / "RESULTS.md",
                        help="file whose generated block is rewritten (the rest is kept)")
    parser.add_argument("--collect_only", action="store_true")
    args, run_options = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (benchmark) %(message)s")

    available = sorted(p.stem for p in (RECIPE / "conf/tuning/bench").glob("*.yaml"))
    systems = args.systems or available
    unknown = [s for s in systems if s not in available]
    if unknown:
        parser.error(f"unknown system(s) {unknown}: choose from {available}")
    work = args.work or config_set_work(args.config_set)
    exp = (RECIPE / work / "exp").resolve()
    # The command that reproduces the whole table (a run in pieces adds --systems to it).
    command = shlex.join(["python", "local/benchmark.py", *(["--config_set", args.config_set]
                                                         if args.config_set != "bench" else []), *run_options])
    run = ["./run.sh", "--config_set", args.config_set, "--work", work, *run_options]
    if not args.collect_only:
        logging.info("32-bit model (stages 1-9; finished work is skipped)")
        if timed_run([*run, "--stop_stage", "9"], exp / CLOCK, FP32_PIECE) != 0:
            raise SystemExit("benchmark: run.sh stages 1-9 (the 32-bit model) failed")
        sets = condition_sets(system_dir(exp, FP32))
        for name in systems:
            if system_result(name, system_dir(exp, name), sets) is not None:
                logging.info(f"{name}: results exist, skipped")
                continue
            logging.info(f"{name}: stages 10-13")
            code = timed_run([*run, "--stage", "10", "--stop_stage", "13",
                              "--mpq_config", f"conf/tuning/bench/{name}.yaml"], exp / CLOCK, name)
            if code != 0:
                logging.error(f"{name}: run.sh failed (exit {code}); continuing with the others")
            collect(exp, available, args.output_dir, args.results_md, args.config_set, command)
    result = collect(exp, available, args.output_dir, args.results_md, args.config_set, command)
    for r in result["systems"]:
        wers = " ".join(f"{c} {w:6.2f} (p {fmt(r['p_value'][c], '.3g')})" for c, w in r["wer"].items())
        print(f"{r['name']:<22} {r['method']:<10} bits {r['avg_bits']:6.3f} target {fmt(r['target_bits']):>5} "
              f"ratio {r['compression_ratio']:6.2f} {wers} lossless {r['lossless']!s:<5} "
              f"{r['compression_seconds']:6.0f} s" + ("  OFF TARGET" if r["on_target"] is False else ""))
    skip = ("systems", "fp32_training_curve", "comparisons", "seed_spread")
    print("json " + json.dumps({k: v for k, v in result.items() if k not in skip}))


if __name__ == "__main__":
    main()
