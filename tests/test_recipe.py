"""Specification of the LibriSpeech recipe (egs/librispeech/run.sh) and of compose_config.

The smoke test runs every stage of run.sh as a user would (a subprocess), with the
``smoke`` config set: a ~26-utterance synthesized corpus, a 1-layer tiny upstream and
one epoch per training run. It takes a few minutes on 2 CPU cores.
"""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet_mpq.bin.compose_config import compose, deep_merge, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "librispeech"
RUN = RECIPE / "run.sh"
MISSING = [tool for tool in ("espeak-ng",) if shutil.which(tool) is None]
MISSING += [] if Path("/usr/share/wordnet/data.noun").is_file() else ["wordnet-base"]
needs_espeak = pytest.mark.skipif(bool(MISSING), reason=f"the built-in corpus needs {', '.join(MISSING)}")


def run_recipe(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RUN), *args], cwd=RECIPE, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "LIBRISPEECH": "", **(env or {})},
    )


def table_rows(report: Path) -> list[list[str]]:
    """The body rows of the Markdown results table, as lists of cells."""
    lines = [line for line in report.read_text().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


# ---------------------------------------------------------------- the whole recipe
@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """A finished smoke run of stages 1-13 (joint 3.5-bit), then stage 10- again with ptq 4-bit."""
    work = tmp_path_factory.mktemp("recipe")
    for config in ("conf/tuning/train_mpq_joint_3.5bit.yaml", "conf/tuning/train_mpq_ptq_4bit.yaml"):
        stage = "1" if "joint" in config else "10"
        result = run_recipe("--config_set", "smoke", "--work", str(work), "--stage", stage, "--mpq_config", config)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work


@needs_espeak
def test_smoke_run_reports_fp32_and_every_compressed_system(smoke):
    rows = table_rows(smoke / "exp" / "results.md")
    assert {row[0] for row in rows} == {"fp32", "joint_3.5bit", "ptq_4bit"}
    assert all(row[1] == "test_synth" for row in rows)
    joint = next(row for row in rows if row[0] == "joint_3.5bit")
    assert joint[4] in ("yes", "no") and float(joint[5]) < 32 and float(joint[7]) > 1


@needs_espeak
def test_smoke_run_writes_packed_model_bits_and_plot(smoke):
    system = smoke / "exp" / "asr_mpq_joint_3.5bit"
    assert (system / "model.mpq").stat().st_size > 0
    bits = yaml.safe_load((system / "bits.yaml").read_text())
    assert bits and set(bits.values()) <= {2, 3, 4, 8}
    assert (system / "bits_per_layer.png").read_bytes().startswith(b"\x89PNG")
    assert (system / "compression_time.json").is_file()


@needs_espeak
def test_smoke_run_times_pretraining_and_32_bit_training_over_every_run(smoke):
    for timing_file in ("upstream/hubert_iter0/pretrain_time.json", "asr_fp32/train_time.json",
                        "asr_mpq_joint_3.5bit/compression_time.json"):
        timing = yaml.safe_load((smoke / "exp" / timing_file).read_text())  # JSON is YAML
        assert timing["seconds"] > 0 and timing["runs"] == 1 and timing["device"].startswith("CPU"), timing_file


@needs_espeak
def test_smoke_run_trains_an_lm_on_text_without_test_transcripts_and_decodes_with_it(smoke):
    lm_model = Path(os.path.abspath(smoke / "exp" / "lm" / "valid.loss.best.pth"))
    assert lm_model.is_file() and (smoke / "exp" / "lm" / "train_time.json").is_file()
    md5 = hashlib.md5(lm_model.read_bytes()).hexdigest()
    for system in ("asr_fp32", "asr_mpq_joint_3.5bit", "asr_mpq_ptq_4bit"):
        note = (smoke / "exp" / system / "decode_test_synth" / "decoding.txt").read_text()
        assert note == f"lm_file: {lm_model}\nlm_md5: {md5}\n"
    assert f"Decoding: CTC prefix beam search with the LM {lm_model}." in (smoke / "exp" / "results.md").read_text()
    lm_lines = (smoke / "data" / "lm" / "text").read_text().splitlines()
    assert len(lm_lines) == 300  # smoke.sh: lm_max_lines=300
    padded = [f" {line.split(maxsplit=1)[1]} " for line in lm_lines]
    for held_out in ("dev_synth", "test_synth"):
        for line in (smoke / "data" / held_out / "text").read_text().splitlines():
            transcript = f" {line.split(maxsplit=1)[1]} "
            assert not any(transcript in text for text in padded), transcript


@needs_espeak
def test_decoding_with_another_lm_setting_decodes_again_and_then_skips(smoke, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smoke, work)  # audio paths in wav.scp stay those of the smoke run (read only)
    decoded = work / "exp" / "asr_fp32" / "decode_test_synth"
    for attempt in range(2):
        result = run_recipe("--config_set", "smoke", "--work", str(work), "--stage", "9", "--stop_stage", "9",
                            "--use_lm", "false")
        assert result.returncode == 0, result.stderr[-3000:]
        assert (decoded / "decoding.txt").read_text() == "lm_file: none\n"
        if attempt == 0:
            first = (decoded / "text").stat().st_mtime_ns
    assert (decoded / "text").stat().st_mtime_ns == first  # the second run found it done


@needs_espeak
def test_stage_10_skips_a_finished_compression_with_the_same_config(smoke):
    result = run_recipe("--config_set", "smoke", "--work", str(smoke), "--stage", "10", "--stop_stage", "10",
                        "--mpq_config", "conf/tuning/train_mpq_ptq_4bit.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already done with this config" in result.stdout


@needs_espeak
def test_two_stage_with_a_bit_config_only_trains_at_those_bits(smoke, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(smoke, work)
    given = work / "exp" / "asr_mpq_joint_3.5bit" / "bits.yaml"
    config = tmp_path / "two_stage_given_bits.yaml"
    config.write_text(f"preset: {RECIPE / 'conf' / 'tuning' / 'train_mpq_two_stage_3.5bit.yaml'}\n"
                      f"frontend_conf: {{quantizer_conf: {{bit_config: {given}}}}}\n")
    result = run_recipe("--config_set", "smoke", "--work", str(work), "--stage", "10", "--stop_stage", "10",
                        "--mpq_config", str(config))  # (the copy's LM path differs from the smoke run's: no stage 12)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "its stage 2 only" in result.stdout and "bit-width search" not in result.stdout
    system = work / "exp" / "asr_mpq_two_stage_given_bits"
    assert not (system / "search").exists()
    export = subprocess.run(
        [sys.executable, "-m", "espnet_mpq.bin.export", "--asr_train_config", str(system / "config.yaml"),
         "--asr_model_file", str(system / "latest.pth"), "--output", str(tmp_path / "model.mpq"),
         "--output_bit_config", str(tmp_path / "bits.yaml")], cwd=RECIPE, capture_output=True, text=True)
    assert export.returncode == 0, export.stderr[-3000:]
    assert yaml.safe_load((tmp_path / "bits.yaml").read_text()) == yaml.safe_load(given.read_text())
    assert yaml.safe_load((system / "compression_time.json").read_text())["quantizer"] == "two_stage"
    # The same config over a changed bits file: trained again, not skipped as done.
    bits = yaml.safe_load(given.read_text())
    layer = next(iter(bits))
    bits[layer] = 8 if bits[layer] != 8 else 2
    given.write_text(yaml.safe_dump(bits))
    again = run_recipe("--config_set", "smoke", "--work", str(work), "--stage", "10", "--stop_stage", "10",
                       "--mpq_config", str(config))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already done" not in again.stdout and "afresh" in again.stdout


# ---------------------------------------------------------------- bad input
def test_librispeech_path_that_is_not_librispeech_is_refused(tmp_path):
    (tmp_path / "not_librispeech").mkdir()
    (tmp_path / "not_librispeech" / "README").write_text("hello")
    result = run_recipe("--work", str(tmp_path), "--stop_stage", "1",
                        env={"LIBRISPEECH": str(tmp_path / "not_librispeech")})
    assert result.returncode != 0
    assert "is not a LibriSpeech directory" in result.stderr + result.stdout


def test_missing_librispeech_subset_is_named(tmp_path):
    import numpy as np
    import soundfile

    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "1" / "2"
    chapter.mkdir(parents=True)
    soundfile.write(chapter / "1-2-0000.flac", np.zeros(16000, dtype="float32"), 16000)
    (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO WORLD\n")
    result = run_recipe("--work", str(tmp_path / "work"), "--stop_stage", "1",
                        env={"LIBRISPEECH": str(tmp_path / "LibriSpeech")})
    assert result.returncode != 0
    assert "subset 'test-clean' not found" in result.stderr + result.stdout


def test_unknown_mpq_config_is_refused_before_any_stage(tmp_path):
    result = run_recipe("--work", str(tmp_path), "--mpq_config", "conf/tuning/no_such.yaml")
    assert result.returncode != 0
    assert "--mpq_config conf/tuning/no_such.yaml: no such file" in result.stderr
    assert "Stage 1" not in result.stdout


def test_mpq_config_with_unknown_quantizer_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("frontend_conf: {quantizer: magic}\n")
    result = run_recipe("--work", str(tmp_path / "work"), "--mpq_config", str(config))
    assert result.returncode != 0
    assert "bad quantizer" in result.stderr and "magic" in result.stderr


@pytest.mark.parametrize("option, value, message", [
    ("--use_lm", "yes", "--use_lm yes: must be true or false"),
    ("--lm_max_lines", "-3", "--lm_max_lines -3: must be a non-negative integer"),
    ("--lm_text", "/no/such/lm.txt", "--lm_text /no/such/lm.txt: no such file, or empty"),
])
def test_bad_lm_options_are_refused(tmp_path, option, value, message):
    result = run_recipe("--work", str(tmp_path), option, value)
    assert result.returncode != 0 and message in result.stderr


def test_an_lm_built_from_other_text_is_refused(tmp_path):
    (tmp_path / "data" / "lm").mkdir(parents=True)
    (tmp_path / "data" / "lm" / "source").write_text("lm_text: built-in lm_max_lines: 300\n")
    result = run_recipe("--work", str(tmp_path), "--use_lm", "true", "--stage", "9", "--stop_stage", "9")
    assert result.returncode != 0
    assert "was built from 'lm_text: built-in lm_max_lines: 300', not 'lm_text: built-in lm_max_lines: 0'" \
        in result.stderr


def test_an_lm_trained_with_another_config_is_refused(tmp_path):
    for done in ("exp/asr_fp32/.done", "exp/lm/.done", "data/lm/.done"):
        (tmp_path / done).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / done).touch()
    (tmp_path / "exp" / "lm" / "train.yaml").write_text("max_epoch: 3\n")  # not what conf/train_lm.yaml composes
    result = run_recipe("--work", str(tmp_path), "--use_lm", "true", "--stage", "8", "--stop_stage", "8",
                        "--lm_overrides", "max_epoch=6")
    assert result.returncode != 0
    assert "was trained with another config than --lm_config conf/train_lm.yaml --lm_overrides 'max_epoch=6'" \
        in result.stderr


def test_an_upstream_built_with_other_options_is_refused(tmp_path):
    random = tmp_path / "exp" / "upstream" / "random"
    random.mkdir(parents=True)
    (random / "model.pth").write_bytes(b"not rebuilt")
    (random / "build_args").write_text("--arch espnet_hubert --preset tiny --num_layers 1 --num_classes 8\n")
    result = run_recipe("--work", str(tmp_path), "--stage", "6", "--stop_stage", "6", "--num_clusters", "50")
    assert result.returncode != 0
    assert "was built with '--arch espnet_hubert --preset tiny --num_layers 1 --num_classes 8', not '" in result.stderr
    assert "--num_classes 50'" in result.stderr
    assert (random / "model.pth").read_bytes() == b"not rebuilt"


def test_an_upstream_pretrained_with_another_config_is_refused(tmp_path):
    random, ssl = tmp_path / "exp" / "upstream" / "random", tmp_path / "exp" / "upstream" / "hubert_iter0"
    random.mkdir(parents=True)
    ssl.mkdir(parents=True)
    (random / "model.pth").write_bytes(b"")  # no build_args: built before the check, reused
    (random / "config.yaml").write_text("encoder: hubert\n")
    (ssl / ".done").touch()
    (ssl / "pretrain.yaml").write_text("max_epoch: 3\n")  # not what this run composes
    result = run_recipe("--work", str(tmp_path), "--stage", "6", "--stop_stage", "6",
                        "--pretrain_overrides", "max_epoch=2")
    assert result.returncode != 0
    assert "was pre-trained with another config than --pretrain_config conf/pretrain_hubert.yaml" \
        " --pretrain_overrides 'max_epoch=2'" in result.stderr


def test_a_32bit_model_trained_with_another_config_is_refused(tmp_path):
    (tmp_path / "exp" / "asr_fp32").mkdir(parents=True)
    (tmp_path / "exp" / "asr_fp32" / ".done").touch()
    (tmp_path / "exp" / "asr_fp32" / "train.yaml").write_text("max_epoch: 3\n")  # not what this run composes
    result = run_recipe("--work", str(tmp_path), "--stage", "8", "--stop_stage", "8", "--fp32_overrides", "max_epoch=6")
    assert result.returncode != 0
    assert "was trained with another config than --train_config conf/train_asr.yaml --train_overrides ''" \
        " --fp32_overrides 'max_epoch=6'" in result.stderr
    assert (tmp_path / "exp" / "asr_fp32" / "train.yaml").read_text() == "max_epoch: 3\n"


def test_unknown_option_is_refused(tmp_path):
    result = run_recipe("--work", str(tmp_path), "--no_such_option", "1")
    assert result.returncode != 0
    assert "unknown option --no_such_option" in result.stderr


# ---------------------------------------------------------------- local/decode_set.sh
# A stand-in for $decode_cmd: "FAKE LOG python -m ... --key_file K --output_dir D" writes
# D/1best_recog/text with a hypothesis per key of K, except the keys in $DROP; it fails on $FAIL_KEY.
FAKE_DECODE = """#!/usr/bin/env bash
shift; while [ $# -gt 0 ]; do case $1 in --key_file) keys=$2;; --output_dir) out=$2;; esac; shift; done
mkdir -p "$out/1best_recog"
while read -r k; do
  [ "$k" != "${FAIL_KEY:-}" ] || exit 3
  case " ${DROP:-} " in *" $k "*) ;; *) echo "$k hyp of $k" >> "$out/1best_recog/text";; esac
done < "$keys"
"""


def decode_set(tmp_path: Path, jobs: str, **env) -> tuple[subprocess.CompletedProcess, Path]:
    fake = tmp_path / "fake_decode.sh"
    fake.write_text(FAKE_DECODE)
    fake.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "wav.scp").write_text("".join(f"u{i} /dev/null\n" for i in (3, 1, 2, 5, 4)))
    out = tmp_path / "decode"
    result = subprocess.run(["local/decode_set.sh", str(data), str(out), jobs, "--ngpu", "0"], cwd=RECIPE,
                            capture_output=True, text=True, env={**os.environ, "decode_cmd": str(fake), **env})
    return result, out


def test_decode_set_deals_utterances_to_jobs_and_gathers_every_hypothesis_sorted(tmp_path):
    result, out = decode_set(tmp_path, "2")
    assert result.returncode == 0, result.stderr
    assert (out / "text").read_text() == "".join(f"u{i} hyp of u{i}\n" for i in range(1, 6))
    assert sorted(p.name for p in out.glob("keys.*")) == ["keys.1", "keys.2"] and (out / ".done").is_file()


def test_decode_set_refuses_a_missing_hypothesis(tmp_path):
    result, out = decode_set(tmp_path, "2", DROP="u4")
    assert result.returncode == 1
    assert "4 of 5 utterances" in result.stderr
    assert not (out / "text").exists() and not (out / ".done").exists()


def test_decode_set_fails_when_a_job_fails(tmp_path):
    result, out = decode_set(tmp_path, "3", FAIL_KEY="u1")
    assert result.returncode == 1
    assert "decoding" in result.stderr and "failed" in result.stderr
    assert not (out / ".done").exists()


@pytest.mark.parametrize("jobs", ["0", "two", "-1"])
def test_decode_set_refuses_a_bad_job_count(tmp_path, jobs):
    result, _ = decode_set(tmp_path, jobs)
    assert result.returncode == 1
    assert f"JOBS must be a positive integer, got '{jobs}'" in result.stderr


# ---------------------------------------------------------------- compose_config
def test_deep_merge_merges_mappings_and_replaces_other_values():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert deep_merge(base, {"a": {"y": [3]}, "c": 2}) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # inputs untouched


def test_preset_key_is_resolved_relative_to_the_file_and_merged_first(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "p.yaml").write_text("frontend_conf: {quantizer: joint, quantizer_conf: {x: 1}}\n")
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "t.yaml").write_text("preset: ../presets/p.yaml\nfrontend_conf: {quantizer_conf: {x: 2}}\n")
    assert load_config(tmp_path / "tuning" / "t.yaml") == {"frontend_conf": {"quantizer": "joint", "quantizer_conf": {"x": 2}}}


def test_set_overrides_win_and_parse_values_as_yaml(tmp_path):
    (tmp_path / "base.yaml").write_text("max_epoch: 5\nmodel_conf: {kd_weight: 0.0}\n")
    config = compose(tmp_path / "base.yaml", [], ["max_epoch=1", "model_conf.teacher_config=null", "a.b=[2, 4]"])
    assert config == {"max_epoch": 1, "model_conf": {"kd_weight": 0.0, "teacher_config": None}, "a": {"b": [2, 4]}}
    with pytest.raises(ValueError, match="key.sub=value"):
        parse_override("no_equals_sign")


def test_every_recipe_tuning_config_composes_to_a_valid_quantizer(monkeypatch):
    from espnet_mpq.quantizers import build_config

    monkeypatch.chdir(RECIPE)  # run.sh's directory: a bit_config path is relative to it
    tuning = sorted((RECIPE / "conf" / "tuning").rglob("*.yaml"))  # bench/ and bench_ablation/ too
    assert len(tuning) >= 11 + 27
    for path in tuning:
        frontend = compose(RECIPE / "conf" / "train_asr.yaml", [path])["frontend_conf"]
        bit_config = (frontend.get("quantizer_conf") or {}).get("bit_config")
        if bit_config is not None and not Path(bit_config).is_file():  # an earlier run's output, not made yet
            with pytest.raises(ValueError, match=f"bit_config={bit_config!r}.*no such file"):
                build_config(frontend["quantizer"], frontend.get("quantizer_conf"))
        else:
            build_config(frontend["quantizer"], frontend.get("quantizer_conf"))


@pytest.mark.parametrize("system", ["joint_3.0bit", "joint_3.0bit_seed2", "joint_2.5bit", "joint_2.5bit_seed2"])
def test_the_fixed2_ablation_is_its_benchmark_system_with_one_more_epoch(system):
    """bench_ablation/<system>_fixed2 = bench/<system> with max_epoch 3: 1 search epoch, then 2 at fixed bits."""
    tuning = RECIPE / "conf" / "tuning"
    bench = compose(RECIPE / "conf" / "train_asr.yaml", [tuning / "bench" / f"{system}.yaml"])
    ablation = compose(RECIPE / "conf" / "train_asr.yaml", [tuning / "bench_ablation" / f"{system}_fixed2.yaml"])
    assert (bench["max_epoch"], ablation["max_epoch"]) == (2, 3)
    assert ablation["frontend_conf"]["quantizer_conf"]["search_length"] == 1
    assert {**ablation, "max_epoch": 2} == bench


def test_search_stats_weights_expected_and_argmax_bits_by_layer_size(tmp_path):
    import torch

    spec = importlib.util.spec_from_file_location("search_stats", RECIPE / "local" / "search_stats.py")
    search_stats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search_stats)
    bits = torch.tensor([1, 2, 4])
    state = {  # layer a: 30 params, settled on 4 bits; layer b: 10 params, flat (argmax: the first, 1 bit)
        "a.parametrizations.weight.original": torch.zeros(3, 10),
        "a.parametrizations.weight.0.bits": bits, "a.parametrizations.weight.0.arch_logits": torch.tensor([0., 0., 50.]),
        "b.parametrizations.weight.original": torch.zeros(10),
        "b.parametrizations.weight.0.bits": bits, "b.parametrizations.weight.0.arch_logits": torch.zeros(3),
    }
    torch.save(state, tmp_path / "latest.pth")
    stats = search_stats.search_stats(tmp_path / "latest.pth")
    assert stats["expected_bits"] == pytest.approx((30 * 4 + 10 * 7 / 3) / 40)
    assert stats["realised_bits"] == pytest.approx((30 * 4 + 10 * 1) / 40)
    assert stats["mean_max_prob"] == pytest.approx((1 + 1 / 3) / 2) and stats["layers"] == 2
