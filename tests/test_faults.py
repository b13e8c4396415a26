"""Specification: a bad file, option or interrupted run either works or stops with one clear line.

One test per fault class of issue 13 (the full sweep, with a trained tiny model, is
bench/fault_sweep.py). The recipe's tests run run.sh on a work directory that holds
only what the stage under test reads, so each takes seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from espnet_mpq.core.packed_file import PackedFileError, read_packed, save_packed
from espnet_mpq.core.transform import prepare

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "librispeech"


def run_recipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RECIPE / "run.sh"), *args], cwd=RECIPE, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "LIBRISPEECH": ""})


def fp32_work(tmp_path: Path, done: bool) -> Path:
    """A recipe work dir with a (placeholder) 32-bit model file, finished or not."""
    fp32 = tmp_path / "exp" / "asr_fp32"
    fp32.mkdir(parents=True)
    (fp32 / "valid.loss.best.pth").write_bytes(b"placeholder")
    (fp32 / "config.yaml").write_text("{}\n")
    if done:
        (fp32 / ".done").touch()
    return tmp_path


# ---------------------------------------------------------------- packed files
def test_a_one_character_change_in_the_packed_header_is_refused(tmp_path):
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 8))
    prepare(model, candidate_bits=[4])
    path = tmp_path / "m.mpq"
    save_packed(model, path)
    data = bytearray(path.read_bytes())
    at = data.index(b'"offset":', 24) + len(b'"offset":')
    data[at] = ord("7")  # the first layer's code offset: it would decode other bytes as weights
    path.write_bytes(bytes(data))
    with pytest.raises(PackedFileError, match="m.mpq is corrupt: header checksum mismatch"):
        read_packed(path)


def test_decoding_a_file_with_a_damaged_magic_stops_in_one_line(tmp_path, capsys):
    from espnet_mpq.bin.asr_inference import main as asr_inference

    model_file = tmp_path / "model.mpq"
    model_file.write_bytes(b"XPQPACK\0" + bytes(100))
    (tmp_path / "wav.scp").write_text("u1 /nonexistent.wav\n")
    with pytest.raises(SystemExit) as exit_info:
        asr_inference(["--asr_train_config", str(tmp_path / "config.yaml"), "--asr_model_file", str(model_file),
                       "--output_dir", str(tmp_path / "out"), "--ngpu", "0",
                       "--data_path_and_name_and_type", f"{tmp_path / 'wav.scp'},speech,sound"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {model_file} is neither an espnet_mpq packed model file nor a torch")
    assert not any("Traceback" in line for line in err)


# ---------------------------------------------------------------- checkpoints
def test_training_from_a_truncated_checkpoint_stops_in_one_line_naming_it(tmp_path, capsys):
    from espnet_mpq.bin.asr_train import main as asr_train

    checkpoint = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1000)}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    with pytest.raises(SystemExit) as exit_info:
        asr_train(["--init_param", str(checkpoint), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (f"error: {checkpoint} is a damaged torch checkpoint (truncated or not a "
                                       "whole archive: File is not a zip file)\n")


# ---------------------------------------------------------------- hypotheses
def test_a_system_missing_a_quarter_of_its_hypotheses_is_not_lossless(tmp_path):
    from espnet_mpq.bin.score import main as score

    refs = {f"1-2-{i:04d}": "A B C D" for i in range(40)}
    (tmp_path / "ref").write_text("".join(f"{u} {t}\n" for u, t in refs.items()))
    (tmp_path / "fp32").write_text("".join(f"{u} X X X X\n" for u in refs))  # every word wrong
    (tmp_path / "q").write_text("".join(f"{u} X X X X\n" for i, u in enumerate(refs) if i % 4))
    score(["--ref", str(tmp_path / "ref"), "--hyp", f"fp32={tmp_path / 'fp32'}", "--hyp", f"q={tmp_path / 'q'}",
           "--backend", "python", "--output_json", str(tmp_path / "out.json")])
    q = json.loads((tmp_path / "out.json").read_text())["systems"]["q"]
    assert len(q["missing_utterances"]) == 10 and q["lossless"] is False


# ---------------------------------------------------------------- corpora and audio
def test_audio_damaged_past_a_valid_header_is_skipped_by_name(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "1" / "2"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        soundfile.write(chapter / f"1-2-{i:04d}.flac", (0.1 * rng.standard_normal(16000)).astype("float32"), 16000)
    (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO\n1-2-0001 WORLD\n")
    bad = chapter / "1-2-0001.flac"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header intact, data cut
    result = subprocess.run([sys.executable, "local/prepare_data.py", "--root", str(tmp_path / "LibriSpeech"),
                             "--subset", "dev-clean", "--out", str(tmp_path / "data")], cwd=RECIPE,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"skipping {bad}: unreadable audio data" in result.stderr
    assert (tmp_path / "data" / "wav.scp").read_text().split()[0::2] == ["1-2-0000"]


# ---------------------------------------------------------------- run.sh options and stages
@pytest.mark.parametrize("option", [("--stage", "x"), ("--stop_stage", "1a"), ("--nj", "-1"), ("--force", "yes")])
def test_run_sh_refuses_a_bad_option_value_in_one_line(tmp_path, option):
    result = run_recipe("--work", str(tmp_path), *option)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and f"error: {option[0]} {option[1]}:" in result.stderr
    assert "Stage" not in result.stdout


def test_a_bad_mpq_config_leaves_no_experiment_directory(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("frontend_conf: {quantizer: magic}\n")
    result = run_recipe("--work", str(tmp_path / "work"), "--mpq_config", str(config), "--stage", "10")
    assert result.returncode == 1 and "magic" in result.stderr
    assert not (tmp_path / "work").exists()


def test_stage_10_needs_stage_8_to_have_finished(tmp_path):
    work = fp32_work(tmp_path, done=False)
    result = run_recipe("--config_set", "smoke", "--work", str(work), "--stage", "10", "--stop_stage", "10",
                        "--mpq_config", "conf/tuning/train_mpq_none.yaml")
    assert result.returncode == 1
    assert "the 32-bit training has not finished" in result.stderr and ".done" in result.stderr


def test_compression_time_sums_every_run_of_stage_10(tmp_path):
    work = fp32_work(tmp_path, done=True)
    args = ("--config_set", "smoke", "--work", str(work), "--stage", "10", "--stop_stage", "10",
            "--mpq_config", "conf/tuning/train_mpq_none.yaml")
    assert run_recipe(*args).returncode == 0
    system = work / "exp" / "asr_mpq_none"
    (system / ".done").unlink()  # as if the run had been killed ...
    (system / ".clock" / "1.1").write_text("100\n")  # ... after an earlier run of 100 s
    result = run_recipe(*args)
    assert result.returncode == 0, result.stderr
    timing = json.loads((system / "compression_time.json").read_text())
    assert timing["seconds"] >= 100 and timing["runs"] == 3


def test_a_resumed_job_keeps_the_log_of_its_earlier_runs(tmp_path):
    log = tmp_path / "train.log"
    for word in ("first", "second"):
        subprocess.run([str(RECIPE / "utils" / "run_local.sh"), str(log), "echo", word], check=True, timeout=60)
    text = log.read_text()
    assert "first" in text and "second" in text


# ---------------------------------------------------------------- nltk
def test_registering_prints_no_nltk_download_errors():
    result = subprocess.run([sys.executable, "-c", "from espnet_mpq.register import register; register()"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "[nltk_data]" not in result.stdout + result.stderr
