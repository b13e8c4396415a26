#!/usr/bin/env python3
"""Fault sweep: inject faults a user meets and check that each one works or stops clearly.

Usage:
    .venv/bin/python bench/fault_sweep.py [--work /tmp/fault_sweep] | tee bench/results/fault_sweep.txt

On a tiny HuBERT (2 x 64, the tests' helpers) fine-tuned for one epoch on eight
utterances of noise, and a joint model trained from it for two epochs, it injects
faults into packed files, checkpoints (averaged ones included), configs, bit
configs, corpora, audio, hypotheses and interrupted stages, each through the entry
point a user would call (python -m espnet_mpq.bin.*, local/prepare_data.py, run.sh).
Entry points run in this process (their ``main``; SystemExit gives the exit status)
unless the fault needs a process to kill or a shell. One line per fault:

    fault | exit code | first line of the message | verdict

Verdicts: ``clear error`` (non-zero exit, a one-line ``error:`` message naming the
bad value or file), ``recovered`` (exit 0 and the output checked correct: the
hypotheses, bit-widths or files compared with the right ones), ``silent wrong``
(exit 0 and the check fails), ``unclear error`` (non-zero exit without such a line)
and ``traceback`` (an uncaught exception). The last line is a JSON summary:
{"faults": N, "clear_error": a, "recovered": b, "silent_wrong": c, "traceback": d, ...}.
About 5 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "librispeech"
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(RECIPE / "local"))

from conftest import make_tiny_asr_corpus  # noqa: E402  (the tests' tiny data and model helpers)
from test_espnet_integration import ALL_GROUPS, asr_train_command, write_config  # noqa: E402

from espnet_mpq.upstream_builder import save_upstream_checkpoint  # noqa: E402

TRAIN_TIMEOUT_S = 600


@dataclass
class Result:
    fault: str
    code: int
    message: str
    verdict: str


RESULTS: list[Result] = []


# ---------------------------------------------------------------- running and judging
def first_error_line(text: str) -> str:
    """The line that explains a failure: the first 'error:' line, else the last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower() and "[nltk_data]" not in line:
            return line[line.lower().index("error:"):]
    return lines[-1] if lines else ""


def call(main: Callable, argv: list[str]) -> tuple[int, str, bool]:
    """Run an entry point's main in this process: (exit code, its stderr, whether it raised a traceback)."""
    err, out = io.StringIO(), io.StringIO()
    code, tb = 0, False
    handler = signal.getsignal(signal.SIGTERM)
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
            print("interrupted (KeyboardInterrupt)", file=sys.stderr)
        except BaseException:  # noqa: BLE001 - any other exception is what the sweep looks for
            code, tb = 1, True
            print(traceback.format_exc(), file=sys.stderr)
    signal.signal(signal.SIGTERM, handler)
    return code, err.getvalue(), tb


def sh(cmd: list[str], cwd: Path = REPO, timeout: int = 300, env: dict | None = None) -> tuple[int, str, bool]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    text = proc.stdout + proc.stderr
    return proc.returncode, text, "Traceback (most recent call last)" in text


def record(fault: str, outcome: tuple[int, str, bool], names: str | None = None,
           check: Callable[[], bool] | None = None, message: str | None = None, checked: str = "") -> None:
    """Judge one fault. ``names``: what a clear error must mention; ``check``: is an exit-0 output right?

    ``checked`` says what the check compares; it is the message of an exit-0 outcome.
    """
    code, text, tb = outcome
    line = message if message is not None else first_error_line(text)
    if code == 0 and message is None:
        line = f"exit 0; checked: {checked or 'nothing'}"
    if tb:
        verdict = "traceback"
        line = [x for x in text.strip().splitlines() if x.strip()][-1] if text.strip() else "traceback"
    elif code != 0:
        error_lines = [x for x in text.splitlines() if "error:" in x.lower() and "[nltk_data]" not in x]
        clear = bool(error_lines) and (names is None or names in line)
        verdict = "clear error" if clear else "unclear error"
    else:
        try:
            ok = check() if check is not None else False
        except Exception as e:  # noqa: BLE001 - a check that cannot even run means the output is wrong
            ok, line = False, f"{line} [check failed: {e!r}]"
        verdict = "recovered" if ok else "silent wrong"
    RESULTS.append(Result(fault, code, line, verdict))
    print(f"{fault} | {code} | {line[:200]} | {verdict}", flush=True)


# ---------------------------------------------------------------- the tiny models
@dataclass
class Setup:
    work: Path
    corpus: object
    upstream: str
    fp32: Path          # output dir of the 32-bit run (quantizer none, 1 epoch)
    joint: Path         # joint, search 1 epoch then fixed, 2 epochs, uninterrupted
    joint_config: Path
    packed: Path        # export of joint/2epoch.pth
    hyps: list[str]     # decoded hypotheses of the packed file (the right answer)
    bits: dict          # joint's final bit-widths


def train(setup_corpus, config: Path, out: Path, *extra: str) -> None:
    proc = subprocess.run(asr_train_command(setup_corpus, config, out, *extra), capture_output=True, text=True,
                          timeout=TRAIN_TIMEOUT_S, cwd=out.parent)
    if proc.returncode != 0:
        raise SystemExit(f"setup training {out} failed:\n{proc.stderr[-3000:]}")


def joint_conf(**changes) -> dict:
    return {"candidate_bits": [2, 4, 8], "target_avg_bits": 3.0, "search_length": 1, "modules": ALL_GROUPS,
            **changes}


def make_setup(work: Path) -> Setup:
    from espnet_mpq.bin.export import main as export

    (work / "corpus").mkdir()
    corpus = make_tiny_asr_corpus(work / "corpus")
    upstream = str(work / "hubert_tiny.pt")
    save_upstream_checkpoint(upstream, "hubert", "tiny")
    fp32 = work / "fp32"
    train(corpus, write_config(work / "fp32.yaml", "hubert_local", upstream, "none"), fp32)
    teacher = {"kd_weight": 1.0, "size_penalty_weight": 1.0, "teacher_config": str(fp32 / "config.yaml"),
               "teacher_model_file": str(fp32 / "valid.loss.best.pth")}
    joint_config = write_config(work / "joint.yaml", "hubert_local", upstream, "joint", joint_conf(), teacher)
    joint = work / "joint"
    train(corpus, joint_config, joint, "--max_epoch", "2", "--init_param", str(fp32 / "valid.loss.best.pth"))
    packed = work / "joint.mpq"
    report = work / "joint_size.json"
    code, text, _ = call(export, ["--asr_train_config", str(joint / "config.yaml"), "--asr_model_file",
                                  str(joint / "2epoch.pth"), "--output", str(packed), "--output_report", str(report)])
    assert code == 0, text
    setup = Setup(work, corpus, upstream, fp32, joint, joint_config, packed, [], {})
    code, text, _ = decode(setup, packed, work / "decode_ref")
    assert code == 0, text
    setup.hyps = hyps_of(work / "decode_ref")
    setup.bits = json.loads(report.read_text())["bits_per_layer"]
    return setup


def decode(setup: Setup, model_file: Path, out: Path, config: Path | None = None) -> tuple[int, str, bool]:
    from espnet_mpq.bin.asr_inference import main as asr_inference

    shutil.rmtree(out, ignore_errors=True)
    return call(asr_inference, [
        "--asr_train_config", str(config or setup.joint / "config.yaml"), "--asr_model_file", str(model_file),
        "--output_dir", str(out), "--data_path_and_name_and_type", f"{setup.corpus.valid / 'wav.scp'},speech,sound",
        "--ngpu", "0", "--batch_size", "1", "--beam_size", "1", "--ctc_weight", "1.0", "--lm_weight", "0"])


def hyps_of(out: Path) -> list[str]:
    return (out / "1best_recog" / "text").read_text().splitlines()


def model_bits(config: Path, model_file: Path) -> dict:
    from espnet_mpq.asr.task import MpqASRTask
    from espnet_mpq.core.transform import bit_widths

    model, _ = MpqASRTask.build_model_from_file(config, model_file, "cpu")
    return bit_widths(model)


# ---------------------------------------------------------------- faults: packed files
def packed_faults(s: Setup) -> None:
    good = s.packed.read_bytes()

    def decode_variant(fault: str, data: bytes, names: str = "bad.mpq") -> None:
        path = s.work / "packed" / fault.replace(" ", "_") / "bad.mpq"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out = path.parent / "decode"
        record(f"packed: {fault}", decode(s, path, out), names, lambda: hyps_of(out) == s.hyps,
               checked="hypotheses equal the intact file's")

    def flipped(at: int) -> bytes:
        data = bytearray(good)
        data[at] ^= 0x01
        return bytes(data)

    header_len = struct.unpack_from("<Q", good, 12)[0]
    offset_digit = good.index(b'"offset":', 24) + len(b'"offset":') + 1  # inside the header's first offset
    decode_variant("truncated by 10 bytes", good[:-10])
    decode_variant("padded by 10 bytes", good + b"\0" * 10)
    decode_variant("payload byte flipped", flipped(len(good) - 100))
    decode_variant("header offset digit changed", flipped(offset_digit))
    decode_variant("header length field changed", flipped(12))
    decode_variant("header checksum field changed", flipped(20))
    decode_variant("header JSON byte changed", flipped(24 + header_len // 2))
    decode_variant("magic damaged", flipped(0))
    decode_variant("empty file", b"")
    decode_variant("3-byte file", good[:3])
    decode_variant("version 1 (before the header checksum)", good[:8] + struct.pack("<I", 1) + good[12:])
    decode_variant("unknown version 99", good[:8] + struct.pack("<I", 99) + good[12:])
    decode_variant("prefix only, no header", good[:24])
    # The 32-bit model's packed file given with the joint model's config.
    from espnet_mpq.bin.export import main as export

    fp32_packed = s.work / "packed" / "fp32.mpq"
    call(export, ["--asr_train_config", str(s.fp32 / "config.yaml"), "--asr_model_file",
                  str(s.fp32 / "valid.loss.best.pth"), "--output", str(fp32_packed)])
    out = s.work / "packed" / "other_model_decode"
    record("packed: file of another model (32-bit) with the joint config", decode(s, fp32_packed, out),
           "packed file", lambda: hyps_of(out) == s.hyps, checked="hypotheses equal the joint model's")
    directory = s.work / "packed" / "a_directory.mpq"
    directory.mkdir(parents=True, exist_ok=True)
    record("packed: model file is a directory", decode(s, directory, s.work / "packed" / "dir_decode"),
           "a_directory.mpq", lambda: False)
    record("packed: model file missing", decode(s, s.work / "packed" / "missing.mpq", s.work / "packed" / "m"),
           "missing.mpq", lambda: False)


# ---------------------------------------------------------------- faults: checkpoints
def checkpoint_faults(s: Setup) -> None:
    from espnet_mpq.bin.export import main as export

    good = (s.joint / "2epoch.pth").read_bytes()
    root = s.work / "checkpoints"
    root.mkdir(exist_ok=True)

    def export_variant(fault: str, model_file: Path, names: str, check: Callable[[Path], bool]) -> None:
        report = model_file.parent / f"{model_file.stem}_size.json"
        outcome = call(export, ["--asr_train_config", str(s.joint / "config.yaml"), "--asr_model_file",
                                str(model_file), "--output_report", str(report)])
        record(f"checkpoint: {fault}", outcome, names, lambda: check(report),
               checked="exported bit-widths equal those of the final checkpoint (2epoch.pth)")

    def same_bits(report: Path) -> bool:
        return json.loads(report.read_text())["bits_per_layer"] == s.bits

    truncated = root / "truncated.pth"
    truncated.write_bytes(good[: len(good) // 2])
    export_variant("truncated .pth (export)", truncated, "truncated.pth", same_bits)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    (root / "flipped.pth").write_bytes(bytes(flipped))
    export_variant("one byte changed in a .pth (export)", root / "flipped.pth", "flipped.pth", same_bits)
    (root / "empty.pth").write_bytes(b"")
    export_variant("empty .pth (export)", root / "empty.pth", "empty.pth", same_bits)
    export_variant("32-bit .pth with the joint config (export)", s.fp32 / "valid.loss.best.pth",
                   "valid.loss.best.pth", same_bits)
    out = root / "decode_truncated"
    record("checkpoint: truncated .pth (decode)", decode(s, truncated, out), "truncated.pth",
           lambda: hyps_of(out) == s.hyps, checked="hypotheses equal the intact model's")

    # ESPnet's own n-best averaging (sums integer buffers, averages float ones) of a joint run
    # whose first epoch was still searching.
    averaged = sorted(s.joint.glob("valid.loss.ave*.pth"))
    ave = next((p for p in averaged if p.name == "valid.loss.ave.pth"), averaged[0] if averaged else None)
    if ave is None:
        from espnet2.main_funcs.average_nbest_models import average_nbest_models  # noqa: F401

        raise SystemExit(f"no averaged checkpoint in {s.joint}: {sorted(os.listdir(s.joint))}")
    export_variant(f"ESPnet-averaged checkpoint {ave.name} (export)", ave, ave.name, same_bits)
    out = root / "decode_averaged"
    record(f"checkpoint: ESPnet-averaged checkpoint {ave.name} (decode)", decode(s, ave, out), ave.name,
           lambda: model_bits(s.joint / "config.yaml", ave) == s.bits,
           checked="bit-widths of the model decoding builds from it equal those of 2epoch.pth")

    # A checkpoint to initialise from or to resume from.
    from espnet_mpq.bin.asr_train import main as asr_train

    args = asr_train_command(s.corpus, s.joint_config, root / "init_truncated", "--init_param", str(truncated))[3:]
    record("checkpoint: truncated --init_param file (train)", call(asr_train, args), "truncated.pth",
           lambda: False)
    args = asr_train_command(s.corpus, s.joint_config, root / "init_packed", "--init_param", str(s.packed))[3:]
    record("checkpoint: packed file as --init_param (train)", call(asr_train, args), s.packed.name,
           lambda: False)
    teacher_bad = root / "teacher_truncated.pth"
    teacher_bad.write_bytes((s.fp32 / "valid.loss.best.pth").read_bytes()[:1000])
    config = write_config(root / "bad_teacher.yaml", "hubert_local", s.upstream, "uniform", {"bits": 4},
                          {"kd_weight": 1.0, "teacher_config": str(s.fp32 / "config.yaml"),
                           "teacher_model_file": str(teacher_bad)})
    args = asr_train_command(s.corpus, config, root / "bad_teacher")[3:]
    record("checkpoint: truncated teacher model file (train)", call(asr_train, args), "teacher_truncated.pth",
           lambda: False)
    config = write_config(root / "no_teacher.yaml", "hubert_local", s.upstream, "uniform", {"bits": 4},
                          {"kd_weight": 1.0, "teacher_config": str(s.fp32 / "config.yaml"),
                           "teacher_model_file": str(root / "no_such_teacher.pth")})
    args = asr_train_command(s.corpus, config, root / "no_teacher")[3:]
    record("checkpoint: missing teacher model file (train)", call(asr_train, args), "no_such_teacher.pth",
           lambda: False)


# ---------------------------------------------------------------- faults: configs and bit configs
def train_with(s: Setup, name: str, quantizer: str, conf: dict, extra_check: Callable[[Path], bool],
               names: str, raw_config: str | None = None) -> None:
    """asr_train (1 epoch) with one bad compression setting; exit 0 is judged by extra_check(output dir)."""
    from espnet_mpq.bin.asr_train import main as asr_train

    root = s.work / "configs" / name.replace(" ", "_").replace("/", "_")
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root / "train.yaml", "hubert_local", s.upstream, quantizer, conf)
    if raw_config is not None:
        config.write_text(raw_config)
    out = root / "exp"
    args = asr_train_command(s.corpus, config, out, "--max_epoch", "1")[3:]
    record(f"config: {name}", call(asr_train, args), names, lambda: extra_check(out),
           checked="the trained model against the config (bits, size, quantized layers)")


def trained_bits(out: Path) -> dict:
    return model_bits(out / "config.yaml", out / "1epoch.pth")


def config_faults(s: Setup) -> None:
    from espnet_mpq.core.accounting import storage_report

    def never(_out: Path) -> bool:
        return False

    def within_target_and_budget(out: Path) -> bool:
        from espnet_mpq.asr.task import MpqASRTask

        model, _ = MpqASRTask.build_model_from_file(out / "config.yaml", out / "1epoch.pth", "cpu")
        report = storage_report(model)
        return report.average_bits <= 3.0 and report.size_mb <= 0.2

    def quantizes_something(out: Path) -> bool:
        return bool(trained_bits(out))

    train_with(s, "target_avg_bits together with size_budget_mb", "joint",
               joint_conf(size_budget_mb=0.2), within_target_and_budget, "size_budget_mb")
    train_with(s, "modules: [] (nothing to quantize)", "joint", joint_conf(modules=[]), quantizes_something,
               "modules")
    train_with(s, "non-numeric tau_start", "joint", joint_conf(tau_start="abc"), never, "tau_start")
    train_with(s, "non-numeric target_avg_bits", "joint", joint_conf(target_avg_bits="three"), never,
               "target_avg_bits")
    train_with(s, "unknown quantizer name", "jiont", {}, never, "jiont")
    train_with(s, "unknown quantizer_conf option", "joint", joint_conf(taget_avg_bits=3.0), never,
               "taget_avg_bits")
    train_with(s, "empty candidate_bits", "joint", joint_conf(candidate_bits=[]), never, "candidate_bits")
    train_with(s, "candidate bit-width 0", "joint", joint_conf(candidate_bits=[0, 4]), never, "candidate_bits")
    train_with(s, "target_avg_bits above every candidate", "joint", joint_conf(target_avg_bits=16.0), never,
               "target_avg_bits")
    train_with(s, "negative size_budget_mb", "joint",
               {**joint_conf(size_budget_mb=-1.0), "target_avg_bits": None}, never, "size_budget_mb")
    train_with(s, "unknown module group", "uniform", {"bits": 4, "modules": ["transformr"]}, never, "transformr")
    train_with(s, "uniform bits 0", "uniform", {"bits": 0}, never, "bits")
    train_with(s, "YAML syntax error in the training config", "uniform", {"bits": 4}, never, "train.yaml",
               raw_config="frontend: s3prl_mpq\nfrontend_conf: {quantizer: uniform\n")

    # Bit configs for two_stage's second run.
    def bit_config_run(name: str, content: str | None, names: str, check: Callable[[Path], bool] = never) -> None:
        path = s.work / "configs" / f"bits_{name.replace(' ', '_')}.yaml"
        if content is not None:
            path.write_text(content)
        train_with(s, f"bit config: {name}", "two_stage",
                   {"candidate_bits": [2, 4, 8], "target_avg_bits": 3.0, "bit_config": str(path)}, check,
                   names)

    layers = list(s.bits)
    bit_config_run("bits not among candidate_bits", yaml.safe_dump({n: 3 for n in layers}), "candidate")
    bit_config_run("unknown layer name", yaml.safe_dump({**s.bits, "frontend.no_such_layer": 4}),
                   "no_such_layer")
    bit_config_run("non-integer bits", yaml.safe_dump({**s.bits, layers[0]: "four"}), "four")
    bit_config_run("empty mapping {}", "{}\n", "bit config")
    bit_config_run("missing file", None, "bits_missing_file.yaml")

    # The 32-bit model's export must not leave a bit config the reader rejects.
    from espnet_mpq.bin.export import main as export
    from espnet_mpq.quantizers import read_bit_config

    bits_path = s.work / "configs" / "fp32_bits.yaml"
    outcome = call(export, ["--asr_train_config", str(s.fp32 / "config.yaml"), "--asr_model_file",
                            str(s.fp32 / "valid.loss.best.pth"), "--output_bit_config", str(bits_path)])

    def no_unreadable_bit_config() -> bool:
        if not bits_path.exists():
            return True
        read_bit_config(bits_path)
        return True

    record("bit config: export of the 32-bit model with --output_bit_config", outcome, None,
           no_unreadable_bit_config, message="no bit config written" if not bits_path.exists() else None)


# ---------------------------------------------------------------- faults: corpora and audio
def corpus_faults(s: Setup) -> None:
    rng = np.random.default_rng(0)

    def make_corpus(root: Path, n: int = 3) -> Path:
        chapter = root / "dev-clean" / "1" / "2"
        chapter.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            soundfile.write(chapter / f"1-2-{i:04d}.flac", (0.1 * rng.standard_normal(16000)).astype("float32"),
                            16000)
            lines.append(f"1-2-{i:04d} HELLO WORLD {i}")
        (chapter / "1-2.trans.txt").write_text("\n".join(lines) + "\n")
        return chapter

    def prepare(fault: str, damage: Callable[[Path], str | None], bad_id: str | None, names: str) -> None:
        root = s.work / "corpora" / fault.replace(" ", "_")
        shutil.rmtree(root, ignore_errors=True)
        chapter = make_corpus(root / "LibriSpeech")
        root_arg = damage(chapter) or str(root / "LibriSpeech")
        out = root / "data"
        outcome = sh([sys.executable, str(RECIPE / "local" / "prepare_data.py"), "--root", root_arg,
                      "--subset", "dev-clean", "--out", str(out)], cwd=RECIPE)
        skip_lines = [x for x in outcome[1].splitlines() if "skipping" in x]

        def skipped_by_name() -> bool:
            ids = [line.split()[0] for line in (out / "wav.scp").read_text().splitlines()]
            expected = [f"1-2-{i:04d}" for i in range(3) if f"1-2-{i:04d}" != bad_id]
            return ids == expected and any(bad_id in line for line in skip_lines)

        message = skip_lines[0][skip_lines[0].index("skipping"):] if outcome[0] == 0 and skip_lines else None
        record(f"corpus: {fault}", outcome, names, skipped_by_name, message=message)

    def truncate_audio(chapter: Path) -> None:
        path = chapter / "1-2-0001.flac"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def zero_audio_data(chapter: Path) -> None:
        path = chapter / "1-2-0001.flac"
        data = bytearray(path.read_bytes())
        data[len(data) // 2:len(data) // 2 + 400] = bytes(400)
        path.write_bytes(bytes(data))

    prepare("audio truncated past a valid header", truncate_audio, "1-2-0001", "1-2-0001")
    prepare("audio data zeroed past a valid header", zero_audio_data, "1-2-0001", "1-2-0001")
    prepare("empty audio file", lambda c: (c / "1-2-0001.flac").write_bytes(b"") and None, "1-2-0001", "1-2-0001")
    prepare("8 kHz audio", lambda c: soundfile.write(c / "1-2-0001.flac", np.zeros(8000, "float32"), 8000),
            "1-2-0001", "1-2-0001")
    prepare("stereo audio", lambda c: soundfile.write(c / "1-2-0001.flac", np.zeros((16000, 2), "float32"), 16000),
            "1-2-0001", "1-2-0001")
    prepare("audio file without a transcript line",
            lambda c: (c / "1-2.trans.txt").write_text("1-2-0000 HELLO\n1-2-0002 WORLD\n") and None,
            "1-2-0001", "1-2-0001")
    prepare("transcript line without an audio file", lambda c: (c / "1-2-0001.flac").unlink(), "1-2-0001",
            "1-2-0001")
    prepare("not a LibriSpeech directory", lambda c: str(c.parents[2] / "nothing_here"), None, "nothing_here")
    prepare("missing subset", lambda c: c.parents[1].rename(c.parents[2] / "dev-other") and None, None,
            "dev-clean")
    prepare("every audio file unreadable",
            lambda c: [p.write_bytes(b"RIFF") for p in c.glob("*.flac")] and None, None, "no usable utterances")


# ---------------------------------------------------------------- faults: hypotheses
def hypothesis_faults(s: Setup) -> None:
    from espnet_mpq.bin.score import main as score

    root = s.work / "hyps"
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    words = "A BIG CAT DOG EATS FISH".split()
    refs = {f"1-2-{i:04d}": " ".join(rng.choice(words, 6)) for i in range(80)}
    ref = root / "ref"
    ref.write_text("".join(f"{u} {t}\n" for u, t in refs.items()))
    hyp = {u: " ".join(w if rng.random() > 0.4 else "X" for w in t.split()) for u, t in refs.items()}

    def write(name: str, texts: dict, raw: bytes | None = None) -> Path:
        path = root / name
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
        return path

    fp32 = write("fp32", hyp)

    def run(fault: str, hyp_path: Path | str, names: str | None, check=lambda _out: False,
            baseline: str = "fp32", ref_path: Path | str = ref, checked: str = "") -> None:
        out = root / f"{fault.replace(' ', '_')}.json"
        out.unlink(missing_ok=True)
        argv = ["--ref", str(ref_path), "--hyp", f"fp32={fp32}", "--hyp", f"q={hyp_path}", "--baseline", baseline,
                "--backend", "python", "--output_json", str(out)]
        record(f"hypotheses: {fault}", call(score, argv), names, lambda: check(out), checked=checked)

    quarter = write("quarter_missing", {u: t for i, (u, t) in enumerate(hyp.items()) if i % 4})

    def counted(out: Path) -> bool:
        q = json.loads(out.read_text())["systems"]["q"]
        return len(q["missing_utterances"]) == 20 and q["lossless"] is False

    run("a quarter of the utterances missing", quarter, None, counted,
        checked="20 missing_utterances in the JSON, scored as deletions, lossless false")
    argv = ["--ref", str(ref), "--hyp", f"fp32={quarter}", "--hyp", f"q={fp32}", "--baseline", "fp32",
            "--backend", "python", "--output_json", str(root / "baseline_missing.json")]
    record("hypotheses: baseline missing a quarter of the utterances", call(score, argv), "baseline 'fp32'")
    run("utterance not in the reference", write("extra", {**hyp, "9-9-9999": "A"}), "9-9-9999")
    run("empty hypothesis file", write("empty", {}, raw=b""), "empty")
    run("repeated utterance id", write("dup", {}, raw=(fp32.read_text() + fp32.read_text().splitlines()[0] + "\n")
                                       .encode()), "appears twice")
    run("hypothesis file missing", root / "no_such_hyp", "no_such_hyp")
    run("reference file missing", fp32, "no_such_ref", ref_path=root / "no_such_ref")
    run("hypothesis file not UTF-8", write("latin1", {}, raw="1-2-0000 CAF\xc9\n".encode("latin-1")), "latin1")
    run("--baseline not among the systems", fp32, "nobody", baseline="nobody")


# ---------------------------------------------------------------- faults: interrupted stages and run.sh
def run_sh(*args: str, timeout: int = 300) -> tuple[int, str, bool]:
    return sh([str(RECIPE / "run.sh"), *args], cwd=RECIPE, timeout=timeout, env={"LIBRISPEECH": ""})


def fake_recipe_work(s: Setup, root: Path, done: bool) -> Path:
    """A recipe work dir whose 32-bit model is the sweep's, with or without stage 8's .done."""
    fp32 = root / "exp" / "asr_fp32"
    fp32.mkdir(parents=True, exist_ok=True)
    shutil.copy(s.fp32 / "config.yaml", fp32 / "config.yaml")
    shutil.copy(s.fp32 / "valid.loss.best.pth", fp32 / "valid.loss.best.pth")
    if done:
        (fp32 / ".done").touch()
    return root


def interrupted_faults(s: Setup) -> None:
    from espnet_mpq.bin import export as export_module
    from espnet_mpq.bin.asr_train import main as asr_train
    from espnet_mpq.core import packed_file

    # Export stopped by SIGTERM while writing the packed file, then run again.
    root = s.work / "interrupted"
    root.mkdir(exist_ok=True)
    target = root / "export" / "model.mpq"
    target.parent.mkdir(exist_ok=True)
    real_fdopen = packed_file.os.fdopen

    def fdopen_then_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_fdopen(*args, **kwargs)

    argv = ["--asr_train_config", str(s.joint / "config.yaml"), "--asr_model_file", str(s.joint / "2epoch.pth"),
            "--output", str(target)]
    packed_file.os.fdopen = fdopen_then_sigterm
    try:
        code, text, tb = call(export_module.main, argv)
    finally:
        packed_file.os.fdopen = real_fdopen
    leftovers = sorted(p.name for p in target.parent.iterdir())
    rerun = call(export_module.main, argv)
    record("interrupted: export stopped by SIGTERM, then run again", rerun, None,
           lambda: leftovers == [] and target.read_bytes() == s.packed.read_bytes()
           and (target.stat().st_mode & 0o777) == 0o644,
           message=f"first run exit {code}, files left: {leftovers}; rerun wrote {target.name}")

    # Training stopped after epoch 1 and resumed: the same bits as the uninterrupted run.
    out = root / "joint_resumed"
    teacher_init = ["--init_param", str(s.fp32 / "valid.loss.best.pth")]
    train(s.corpus, s.joint_config, out, "--max_epoch", "1", *teacher_init)
    outcome = sh(asr_train_command(s.corpus, s.joint_config, out, "--max_epoch", "2", "--resume", "true",
                                   *teacher_init), cwd=out.parent, timeout=TRAIN_TIMEOUT_S)
    record("interrupted: joint training stopped after epoch 1 and resumed", (outcome[0], "", outcome[2]), None,
           lambda: model_bits(out / "config.yaml", out / "2epoch.pth") == s.bits,
           message="resumed from epoch 1 to 2; checked: bit-widths equal the uninterrupted run's")

    # Killed while writing checkpoint.pth (ESPnet writes it in place), then resumed.
    broken = root / "joint_broken_checkpoint"
    shutil.copytree(out, broken)
    data = (broken / "checkpoint.pth").read_bytes()
    (broken / "checkpoint.pth").write_bytes(data[: len(data) // 3])
    args = asr_train_command(s.corpus, s.joint_config, broken, "--max_epoch", "3", "--resume", "true")[3:]
    record("interrupted: truncated checkpoint.pth, then --resume true", call(asr_train, args), "checkpoint.pth")

    # A job's log after a resume keeps its earlier runs (utils/run_local.sh appends).
    log = root / "job.log"
    sh([str(RECIPE / "utils" / "run_local.sh"), str(log), "echo", "first run"], cwd=RECIPE)
    outcome = sh([str(RECIPE / "utils" / "run_local.sh"), str(log), "echo", "second run"], cwd=RECIPE)
    record("interrupted: job log of a resumed stage (run_local.sh)", outcome, None,
           lambda: "first run" in log.read_text() and "second run" in log.read_text(),
           message="checked: the job's log holds both runs")

    # Stage 10 after an interrupted stage 8 (a model file but no .done).
    work = fake_recipe_work(s, root / "recipe_no_done", done=False)
    record("interrupted: stage 10 after an unfinished stage 8", run_sh(
        "--config_set", "smoke", "--work", str(work), "--stage", "10", "--stop_stage", "10",
        "--mpq_config", "conf/tuning/train_mpq_ptq_4bit.yaml"), ".done")

    # Stage 10 killed -9 and resumed: compression_time.json sums both runs.
    work = fake_recipe_work(s, root / "recipe_resumed", done=True)
    cmd = [str(RECIPE / "run.sh"), "--config_set", "smoke", "--work", str(work), "--stage", "10",
           "--stop_stage", "10", "--mpq_config", "conf/tuning/train_mpq_ptq_4bit.yaml"]
    proc = subprocess.Popen(cmd, cwd=RECIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LIBRISPEECH": ""}, start_new_session=True)
    clock = work / "exp" / "asr_mpq_ptq_4bit" / ".clock"
    deadline = time.time() + 120
    while time.time() < deadline and not (clock.is_dir() and any(clock.glob("*[0-9]"))):
        time.sleep(0.5)
    time.sleep(8)  # into the post-training quantization
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    first_piece = sum(int(p.read_text()) for p in clock.glob("*[0-9]")) if clock.exists() else 0
    outcome = run_sh(*cmd[1:])
    timing_path = work / "exp" / "asr_mpq_ptq_4bit" / "compression_time.json"

    def summed() -> bool:
        timing = json.loads(timing_path.read_text())
        last = int(next(line for line in outcome[1].splitlines() if "Stage 10: done in" in line)
                   .split("done in ")[1].split()[0])
        return timing.get("runs") == 2 and timing["seconds"] >= last + first_piece - 1 and first_piece >= 3

    record("interrupted: stage 10 killed -9 and resumed (compression time)", outcome, None, summed,
           message=f"killed after a {first_piece} s piece; compression_time.json: "
                   f"{timing_path.read_text().strip() if timing_path.exists() else 'missing'}")

    # run.sh options.
    bad = root / "bad_quantizer.yaml"
    bad.write_text("frontend_conf: {quantizer: magic}\n")
    work = root / "recipe_options"
    record("run.sh: --stage abc", run_sh("--work", str(work), "--stage", "abc"), "abc")
    record("run.sh: --stop_stage 1a", run_sh("--work", str(work), "--stop_stage", "1a"), "1a")
    record("run.sh: --force maybe", run_sh("--work", str(work), "--force", "maybe"), "maybe")
    outcome = run_sh("--work", str(work), "--mpq_config", str(bad), "--stage", "10")
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*")) if work.exists() else []
    if left:  # refused, but the refusal left a directory behind: a wrong result of its own
        outcome = (0, f"left behind: {left}", False)
    record("run.sh: --mpq_config with an unknown quantizer (and nothing left behind)", outcome, "magic")
    record("run.sh: --mpq_config that does not exist", run_sh("--work", str(work), "--mpq_config", "no.yaml"),
           "no.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/espnet_mpq_fault_sweep"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    logging.basicConfig(level=logging.INFO, filename=str(args.work / "sweep.log"),
                        format="%(asctime)s %(levelname)s %(message)s")
    import warnings

    warnings.filterwarnings("ignore")
    from espnet_mpq.register import register

    register()
    t0 = time.time()
    setup = make_setup(args.work)
    print(f"# setup (32-bit and joint tiny models, packed file, reference hypotheses): {time.time() - t0:.0f} s",
          flush=True)
    for group in (packed_faults, checkpoint_faults, config_faults, corpus_faults, hypothesis_faults,
                  interrupted_faults):
        group(setup)
    counts = {v: sum(r.verdict == v for r in RESULTS)
              for v in ("clear error", "recovered", "silent wrong", "unclear error", "traceback")}
    print(f"# {time.time() - t0:.0f} s in all")
    print(json.dumps({"faults": len(RESULTS), "clear_error": counts["clear error"], "recovered": counts["recovered"],
                      "silent_wrong": counts["silent wrong"], "traceback": counts["traceback"],
                      "unclear_error": counts["unclear error"]}))


if __name__ == "__main__":
    main()
