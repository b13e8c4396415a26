"""Specification of the ESPnet integration: registration, training, resuming, exporting and decoding.

Training runs go through ``python -m espnet_mpq.bin.asr_train`` in a subprocess, as a
user runs them, on a tiny HuBERT / wav2vec 2.0 and eight utterances of noise. Each run
is shared by the tests that read it (module-scoped fixtures), so the file costs a
handful of ESPnet start-ups. Export, post-training quantization and decoding call the
entry points' ``main`` in process, and so do the checks of bad input that fail while
the model is built.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from espnet_mpq.core.budget import SizeTarget, allocate
from espnet_mpq.core.transform import quantized_layers

pytestmark = pytest.mark.filterwarnings("ignore")

ENCODER_CONF = {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                "input_layer": "linear", "dropout_rate": 0.0}
TRAIN_TIMEOUT_S = 300
BATCHES_PER_EPOCH = 2  # 8 training utterances, batch_size 4
ALL_GROUPS = ["transformer", "feature_extractor", "pos_conv", "downstream"]


@dataclass
class Run:
    """A finished asr_train run: its output directory and its log (stderr)."""

    out: Path
    log: str

    def epoch_results(self, epoch: int) -> str:
        """The trainer's '<epoch>epoch results: [train] ...' line, up to its [valid] part."""
        match = re.search(rf"{epoch}epoch results: \[train\](.*?)\[valid\]", self.log)
        assert match, f"no results of epoch {epoch} in the log:\n{self.log[-3000:]}"
        return match.group(1)


def write_config(path: Path, upstream: str, ckpt: str, quantizer: str, quantizer_conf: dict | None = None,
                 model_conf: dict | None = None, encoder_conf: dict | None = None) -> Path:
    """An ESPnet ASR training config using the s3prl_mpq frontend and the mpq model (CTC only)."""
    config = {
        "frontend": "s3prl_mpq",
        "frontend_conf": {"upstream": upstream, "path_or_url": ckpt, "multilayer_feature": True,
                          "quantizer": quantizer, "quantizer_conf": quantizer_conf or {}},
        "normalize": "utterance_mvn",
        "encoder": "transformer",
        "encoder_conf": {**ENCODER_CONF, **(encoder_conf or {})},
        "decoder": "none",
        "model": "mpq",
        "model_conf": {"ctc_weight": 1.0, "kd_weight": 0.0, "size_penalty_weight": 0.0, **(model_conf or {})},
        "optim": "adam",
        "optim_conf": {"lr": 0.001},
        "batch_type": "folded",
        "batch_size": 4,
        "max_epoch": 1,
        "num_workers": 0,
        "best_model_criterion": [["valid", "loss", "min"]],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def asr_train_command(corpus, config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "espnet_mpq.bin.asr_train", "--config", str(config), "--output_dir", str(out),
            "--token_type", "char", "--token_list", str(corpus.token_list), "--ngpu", "0",
            *corpus.data_args(), "--fold_length", "80000", "--fold_length", "150",
            "--use_matplotlib", "false", "--use_tensorboard", "false", *extra]


def asr_train(corpus, config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(asr_train_command(corpus, config, out, *extra), capture_output=True, text=True,
                          timeout=TRAIN_TIMEOUT_S, cwd=out.parent)


def train(corpus, config: Path, out: Path, *extra: str) -> Run:
    """asr_train that must succeed."""
    proc = asr_train(corpus, config, out, *extra)
    assert proc.returncode == 0, f"asr_train failed:\n{proc.stderr[-5000:]}"
    return Run(out, proc.stderr)


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def buffers(state: dict, suffix: str) -> dict[str, torch.Tensor]:
    """The quantized layers' ``suffix`` entries (e.g. fixed_onehot), keyed by layer name."""
    marker = ".parametrizations.weight.0."
    return {k.split(marker)[0]: v for k, v in state.items() if k.endswith(marker + suffix)}


def build_model(config: Path, model_file: Path | None = None):
    from espnet_mpq.asr.task import MpqASRTask

    model, _ = MpqASRTask.build_model_from_file(config, model_file, "cpu")
    return model


def edited_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of a run's config.yaml with top-level keys replaced (dicts are merged one level deep)."""
    config = yaml.safe_load(src.read_text())
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    dst.write_text(yaml.safe_dump(config, sort_keys=False))
    return dst


# ---- runs shared by the tests ------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def registered():
    from espnet_mpq.register import register

    register()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("espnet")


@pytest.fixture(scope="module")
def teacher(tiny_asr_corpus, tiny_hubert_ckpt, workdir) -> Run:
    """The 32-bit model (quantizer none), one epoch."""
    config = write_config(workdir / "fp32.yaml", "hubert_local", tiny_hubert_ckpt, "none")
    return train(tiny_asr_corpus, config, workdir / "fp32")


@dataclass
class ResumedRun:
    first: Run  # --max_epoch 1
    resumed: Run  # the same output dir, --max_epoch 2 --resume true
    after_first: dict  # the model state at the end of the first invocation


@pytest.fixture(scope="module")
def joint(tiny_asr_corpus, tiny_hubert_ckpt, teacher, workdir) -> ResumedRun:
    """joint (search for 1 epoch, then fixed bits) with distillation, interrupted after epoch 1 and resumed."""
    config = write_config(
        workdir / "joint.yaml", "hubert_local", tiny_hubert_ckpt, "joint",
        {"candidate_bits": [2, 4, 8], "target_avg_bits": 3.0, "search_length": 1, "modules": ALL_GROUPS},
        {"kd_weight": 1.0, "size_penalty_weight": 1.0, "teacher_config": str(teacher.out / "config.yaml"),
         "teacher_model_file": str(teacher.out / "valid.loss.best.pth")},
    )
    out = workdir / "joint"
    first = train(tiny_asr_corpus, config, out, "--max_epoch", "1")
    after_first = model_state(out / "1epoch.pth")
    resumed = train(tiny_asr_corpus, config, out, "--max_epoch", "2", "--resume", "true")
    return ResumedRun(first, resumed, after_first)


@pytest.fixture(scope="module")
def joint_final(joint) -> dict:
    return model_state(joint.resumed.out / "2epoch.pth")


@pytest.fixture(scope="module")
def joint_export(joint, workdir) -> dict:
    """export of the final joint model: packed file and size report."""
    from espnet_mpq.bin.export import main as export

    out = joint.resumed.out
    export(["--asr_train_config", str(out / "config.yaml"), "--asr_model_file", str(out / "2epoch.pth"),
            "--output", str(out / "model.mpq"), "--output_report", str(out / "size.json")])
    return {"packed": out / "model.mpq", "report": json.loads((out / "size.json").read_text())}


# ---- registration --------------------------------------------------------------------------------

def test_register_adds_the_frontend_and_the_model_to_espnet_asr_choices():
    import espnet2.tasks.asr as asr

    from espnet_mpq.asr.frontend import S3prlMpqFrontend
    from espnet_mpq.asr.model import MpqESPnetModel
    from espnet_mpq.register import register

    register()
    assert asr.frontend_choices.classes["s3prl_mpq"] is S3prlMpqFrontend
    assert asr.model_choices.classes["mpq"] is MpqESPnetModel


def test_register_is_idempotent():
    import espnet2.tasks.asr as asr

    from espnet_mpq.register import register

    before = (dict(asr.frontend_choices.classes), dict(asr.model_choices.classes))
    register()
    register()
    assert (dict(asr.frontend_choices.classes), dict(asr.model_choices.classes)) == before


# ---- joint: search, fixed bit-widths, reported figures, resume ---------------------------------

def test_joint_fixes_every_bit_width_when_its_search_ends_with_epoch_1(joint, joint_final):
    fixed_after_epoch_1 = buffers(joint.after_first, "fixed_onehot")
    assert fixed_after_epoch_1 and all(sorted(v.tolist())[-2:] == [0.0, 1.0] for v in fixed_after_epoch_1.values())
    assert all(torch.equal(v, buffers(joint_final, "fixed_onehot")[n]) for n, v in fixed_after_epoch_1.items())
    assert "search finished at progress 1.000" in joint.first.log


def test_joint_reports_realised_average_bits_and_compression_ratio_in_espnets_epoch_results(joint, joint_export):
    results = joint.resumed.epoch_results(2)
    avg_bits = float(re.search(r" avg_bits=([\d.]+)", results).group(1))
    ratio = float(re.search(r" compression_ratio=([\d.]+)", results).group(1))
    assert avg_bits == pytest.approx(joint_export["report"]["model"]["average_bits"], abs=1e-3)
    assert ratio == pytest.approx(joint_export["report"]["model"]["compression_ratio"], abs=1e-3)
    assert 2 <= avg_bits <= 8 and ratio > 1


def test_joint_reports_the_distillation_loss_and_the_search_figures(joint):
    searching = joint.first.epoch_results(1)
    assert float(re.search(r"loss_kd=([\d.]+)", searching).group(1)) > 0
    for key in ("loss_task", "loss_size", "expected_avg_bits", "argmax_avg_bits", "projected_avg_bits",
                "mean_max_prob", "tau"):
        assert f" {key}=" in searching, key
    assert "loss_kd=" in joint.resumed.epoch_results(2)


def test_resume_continues_the_training_progress(joint, joint_final):
    assert "The training was resumed" in joint.resumed.log and "1epoch results" not in joint.resumed.log
    assert int(joint.after_first["mpq_iteration"]) == BATCHES_PER_EPOCH
    assert int(joint_final["mpq_iteration"]) == 2 * BATCHES_PER_EPOCH


def copy_logits(state: dict, model) -> None:
    """Both parts of every layer's logits (task and size, see split_logits) from a state dict."""
    with torch.no_grad():
        for part in ("arch_logits", "size_logits"):
            values = buffers(state, part)
            for name, s in quantized_layers(model):
                getattr(s, part).copy_(values[name])


def test_the_fixed_bits_are_the_budget_allocation_of_the_learned_logits_and_keep_the_target(
        joint, joint_final, joint_export):
    for part in ("arch_logits", "size_logits"):  # split logits (the default): both parts learned
        learned = buffers(joint.after_first, part)
        assert any(v.abs().max() > 0 for v in learned.values()), part  # the search moved them
        assert all(torch.equal(buffers(joint_final, part)[n], v) for n, v in learned.items()), part  # frozen
    searching = build_model(joint.first.out / "config.yaml")  # a fresh model, still searching
    copy_logits(joint.after_first, searching)
    expected = allocate(searching, SizeTarget(avg_bits=3.0))
    assert {n: int(v.argmax()) for n, v in buffers(joint_final, "fixed_onehot").items()} == expected
    assert 2.95 <= joint_export["report"]["model"]["average_bits"] <= 3.0


def test_exporting_a_checkpoint_still_searching_fixes_it_by_the_budget_allocation(joint, workdir):
    from espnet_mpq.bin.export import main as export

    searching = build_model(joint.first.out / "config.yaml")
    copy_logits(joint.after_first, searching)
    torch.save(searching.state_dict(), workdir / "searching.pth")
    export(["--asr_train_config", str(joint.first.out / "config.yaml"), "--asr_model_file",
            str(workdir / "searching.pth"), "--output_report", str(workdir / "searching_size.json")])
    report = json.loads((workdir / "searching_size.json").read_text())
    assert 2.95 <= report["model"]["average_bits"] <= 3.0


def test_resume_keeps_the_annealed_temperature(joint, joint_final):
    tau_after_first = buffers(joint.after_first, "tau")
    assert all(float(v) < 1.0 for v in tau_after_first.values())  # annealed from tau_start = 1
    assert all(torch.equal(buffers(joint_final, "tau")[n], v) for n, v in tau_after_first.items())


# ---- export and decoding -------------------------------------------------------------------------

def decode(corpus, config: Path, model_file: Path, out: Path, *extra: str) -> list[str]:
    from espnet_mpq.bin.asr_inference import main as asr_inference

    asr_inference(["--asr_train_config", str(config), "--asr_model_file", str(model_file), "--output_dir", str(out),
                   "--data_path_and_name_and_type", f"{corpus.valid / 'wav.scp'},speech,sound", "--ngpu", "0",
                   "--batch_size", "1", "--beam_size", "1", "--ctc_weight", "1.0", "--lm_weight", "0", *extra])
    return (out / "1best_recog" / "text").read_text().splitlines()


def test_export_writes_a_packed_file_of_about_the_accounted_size(joint_export):
    assert joint_export["packed"].stat().st_size == joint_export["report"]["packed_bytes"]
    assert joint_export["report"]["packed_over_accounting"] == pytest.approx(1.0, abs=0.1)


def test_decoding_the_packed_file_gives_the_hypotheses_of_the_trained_model(
        tiny_asr_corpus, joint, joint_export, workdir):
    out = joint.resumed.out
    from_checkpoint = decode(tiny_asr_corpus, out / "config.yaml", out / "2epoch.pth", workdir / "dec_pth")
    from_packed = decode(tiny_asr_corpus, out / "config.yaml", joint_export["packed"], workdir / "dec_mpq")
    assert len(from_checkpoint) == 4
    assert any(line.split(maxsplit=1)[1:] for line in from_checkpoint)  # not all empty
    assert from_packed == from_checkpoint


def best_path_texts(corpus, config: Path, model_file: Path) -> dict[str, str]:
    """Each valid utterance's CTC best path, from the model's encoder and CTC head (ESPnet's CTC.argmax)."""
    import soundfile as sf
    from itertools import groupby

    model = build_model(config, model_file).eval()
    tokens = corpus.token_list.read_text().split()
    texts = {}
    for line in (corpus.valid / "wav.scp").read_text().splitlines():
        key, wav = line.split()
        speech = torch.from_numpy(sf.read(wav, dtype="float32")[0])[None]
        with torch.no_grad():
            enc, _ = model.encode(speech, torch.tensor([speech.shape[1]]))
            path = model.ctc.argmax(enc)[0].tolist()
        chars = [tokens[t] for t, _ in groupby(path) if t not in (model.blank_id, model.sos, model.eos)]
        texts[key] = "".join(chars).replace("<space>", " ")
    return texts


def test_greedy_ctc_decoding_writes_the_best_path_of_every_utterance(tiny_asr_corpus, joint, joint_export, workdir):
    out = joint.resumed.out
    greedy = decode(tiny_asr_corpus, out / "config.yaml", joint_export["packed"], workdir / "dec_greedy",
                    "--ctc_greedy", "true")
    expected = best_path_texts(tiny_asr_corpus, out / "config.yaml", out / "2epoch.pth")
    assert dict(line.partition(" ")[::2] for line in greedy) == expected
    assert any(expected.values())  # not all empty


def test_greedy_ctc_is_used_only_in_the_call_that_asks_for_it(tiny_asr_corpus, joint, workdir):
    import espnet2.bin.asr_inference as inference

    original = inference.Speech2Text
    out = joint.resumed.out
    decode(tiny_asr_corpus, out / "config.yaml", out / "2epoch.pth", workdir / "dec_greedy_once",
           "--ctc_greedy", "true")
    assert inference.Speech2Text is original


@pytest.mark.parametrize("extra, named", [
    (["--ctc_weight", "0.5"], "ctc_weight is 0.5"),
    (["--nbest", "2"], "nbest is 2"),
    (["--lm_file", "lm.pth"], "lm_file"),
])
def test_greedy_ctc_refuses_options_it_would_ignore(tiny_asr_corpus, teacher, workdir, capsys, extra, named):
    with pytest.raises(SystemExit) as stop:
        decode(tiny_asr_corpus, teacher.out / "config.yaml", teacher.out / "valid.loss.best.pth",
               workdir / "dec_refused", "--ctc_greedy", "true", *extra)
    assert stop.value.code == 1
    assert named in capsys.readouterr().err


# ---- the other quantizers --------------------------------------------------------------------------

def test_ptq_quantizes_a_32_bit_model_without_training(tiny_asr_corpus, teacher, workdir):
    from espnet_mpq.bin.ptq import main as ptq
    from espnet_mpq.core.transform import bit_widths, quantized_layers

    compression = workdir / "ptq4.yaml"
    compression.write_text(yaml.safe_dump({"frontend_conf": {"quantizer": "ptq", "quantizer_conf": {"bits": 4}}}))
    out = workdir / "ptq4"
    ptq(["--asr_train_config", str(teacher.out / "config.yaml"),
         "--asr_model_file", str(teacher.out / "valid.loss.best.pth"), "--config", str(compression),
         "--output_dir", str(out)])
    model = build_model(out / "config.yaml", out / "model.pth")
    assert bit_widths(model) and set(bit_widths(model).values()) == {4}
    assert all(bool(s.scales_initialized) for _, s in quantized_layers(model))


def test_uniform_training_on_wav2vec2_runs_at_the_configured_bit_width(tiny_asr_corpus, tiny_wav2vec2_ckpt, workdir):
    config = write_config(workdir / "uniform.yaml", "wav2vec2_local", tiny_wav2vec2_ckpt, "uniform", {"bits": 4})
    run = train(tiny_asr_corpus, config, workdir / "uniform_w2v2")
    assert re.search(r" avg_bits=4\.000,", run.epoch_results(1))


def test_two_stage_trains_the_32_bit_model_with_the_bit_widths_the_search_run_found(
        tiny_asr_corpus, tiny_hubert_ckpt, teacher, workdir):
    from espnet_mpq.bin.export import main as export
    from espnet_mpq.core.transform import bit_widths, quantized_layers

    search_conf = {"candidate_bits": [2, 4, 8], "target_avg_bits": 3.0}
    search = train(tiny_asr_corpus, write_config(workdir / "search.yaml", "hubert_local", tiny_hubert_ckpt,
                                                 "two_stage", search_conf, {"size_penalty_weight": 1.0}),
                   workdir / "two_stage_search")
    bit_config = workdir / "bits.yaml"
    export(["--asr_train_config", str(search.out / "config.yaml"), "--asr_model_file",
            str(search.out / "1epoch.pth"), "--output_bit_config", str(bit_config)])
    stage2_config = write_config(workdir / "stage2.yaml", "hubert_local", tiny_hubert_ckpt, "two_stage",
                                 {**search_conf, "bit_config": str(bit_config)})
    stage2 = train(tiny_asr_corpus, stage2_config, workdir / "two_stage_train",
                   "--init_param", str(teacher.out / "valid.loss.best.pth"))
    model = build_model(stage2.out / "config.yaml", stage2.out / "1epoch.pth")
    assert all(s.is_fixed for _, s in quantized_layers(model))
    assert bit_widths(model) == yaml.safe_load(bit_config.read_text())


# ---- bad input stops before training -----------------------------------------------------------

def test_a_missing_teacher_file_stops_the_run_before_training(tiny_asr_corpus, tiny_hubert_ckpt, workdir):
    missing = workdir / "no_such_teacher" / "valid.loss.best.pth"
    config = write_config(workdir / "bad_teacher.yaml", "hubert_local", tiny_hubert_ckpt, "uniform", {"bits": 4},
                          {"kd_weight": 1.0, "teacher_config": str(missing.parent / "config.yaml"),
                           "teacher_model_file": str(missing)})
    out = workdir / "bad_teacher"
    proc = asr_train(tiny_asr_corpus, config, out)
    assert proc.returncode != 0
    assert re.search(rf"teacher file {re.escape(str(missing.parent))}\S* does not exist", proc.stderr)
    assert "epoch results" not in proc.stderr and not (out / "1epoch.pth").exists()


def student_with_teacher(teacher: Run, workdir: Path, name: str, **changes):
    """A student built from the teacher's config with ``changes``, distilling from the teacher."""
    model_conf = {"kd_weight": 1.0, "teacher_config": str(teacher.out / "config.yaml"),
                  "teacher_model_file": str(teacher.out / "valid.loss.best.pth")}
    config = edited_config(teacher.out / "config.yaml", workdir / f"{name}.yaml", model_conf=model_conf, **changes)
    return build_model(config)


def test_a_teacher_with_another_vocabulary_is_rejected(teacher, workdir):
    tokens = yaml.safe_load((teacher.out / "config.yaml").read_text())["token_list"]
    student = student_with_teacher(teacher, workdir, "vocab", token_list=[*tokens[:-1], "Z", tokens[-1]])
    with pytest.raises(ValueError, match=r"teacher vocabulary \(\d+ tokens\) differs"):
        student.load_teacher()


def test_a_teacher_with_another_architecture_is_rejected(teacher, workdir):
    student = student_with_teacher(teacher, workdir, "arch", encoder_conf={"output_size": 16})
    with pytest.raises(ValueError, match=r"teacher architecture differs from the student's in \d+ tensors"):
        student.load_teacher()


def test_the_matching_teacher_is_accepted(teacher, workdir):
    student = student_with_teacher(teacher, workdir, "same")
    student.load_teacher()
    assert student._teacher and not student._teacher[0].training


def test_a_bit_config_that_does_not_match_the_models_layers_is_rejected(teacher, workdir):
    bit_config = workdir / "wrong_bits.yaml"
    bit_config.write_text(yaml.safe_dump({"frontend.upstream.upstream.model.encoder.layers.7.fc1": 4}))
    frontend_conf = {"quantizer": "two_stage", "quantizer_conf": {"bit_config": str(bit_config),
                                                                  "target_avg_bits": 4.0}}
    config = edited_config(teacher.out / "config.yaml", workdir / "wrong_bits_model.yaml", frontend_conf=frontend_conf)
    message = r"does not match the model's quantized layers: missing .*unknown .*layers\.7\.fc1"
    with pytest.raises(ValueError, match=message):
        build_model(config)


def test_an_unknown_quantizer_is_rejected_listing_the_known_ones(tiny_hubert_ckpt):
    from espnet_mpq.asr.frontend import S3prlMpqFrontend

    with pytest.raises(ValueError, match=r"quantizer 'fancy' is not known: choose from .*'joint'"):
        S3prlMpqFrontend(upstream="hubert_local", path_or_url=tiny_hubert_ckpt, quantizer="fancy")


def test_an_unknown_quantizer_option_is_rejected_listing_the_options(tiny_hubert_ckpt):
    from espnet_mpq.asr.frontend import S3prlMpqFrontend

    with pytest.raises(ValueError, match=r"has no option\(s\) \['candidate_bit'\]: its options are .*'candidate_bits'"):
        S3prlMpqFrontend(upstream="hubert_local", path_or_url=tiny_hubert_ckpt, quantizer="joint",
                         quantizer_conf={"candidate_bit": [2, 4]})


# ---- multi-process training ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_joint_trains_in_two_gloo_ddp_processes_on_cpu(tiny_asr_corpus, tiny_hubert_ckpt, workdir):
    """ESPnet's --multiprocessing_distributed needs GPUs; on CPU each rank is started by hand."""
    config = write_config(workdir / "ddp.yaml", "hubert_local", tiny_hubert_ckpt, "joint",
                          {"candidate_bits": [2, 4, 8], "search_length": 1, "schedule_unit": "iteration",
                           "target_avg_bits": 4.0},
                          {"size_penalty_weight": 1.0})
    out = workdir / "ddp"
    env = {**os.environ, "MASTER_ADDR": "localhost", "MASTER_PORT": str(free_port())}
    ddp = ["--multiprocessing_distributed", "false", "--dist_world_size", "2", "--dist_backend", "gloo",
           "--dist_init_method", "env://", "--unused_parameters", "true"]  # HuBERT's pre-training heads get no grad
    ranks = [subprocess.Popen(asr_train_command(tiny_asr_corpus, config, out, *ddp, "--dist_rank", str(r)),
                              env=env, cwd=workdir, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for r in (0, 1)]
    try:
        logs = [p.communicate(timeout=TRAIN_TIMEOUT_S)[1] for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    assert [p.returncode for p in ranks] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "1epoch results" in logs[0]
    final = model_state(out / "1epoch.pth")
    assert int(final["mpq_iteration"]) == 2  # each rank trains on half of each batch of 4 utterances
    assert all(float(v.sum()) == 1.0 for v in buffers(final, "fixed_onehot").values())


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_joint_trains_with_the_triton_kernel_as_with_the_default_kernel(tiny_asr_corpus, tiny_hubert_ckpt, workdir):
    """ESPNET_MPQ_TRITON=1 through ESPnet's trainer, every layer group (the kernel interpreted on the CPU
    by TRITON_INTERPRET=1): the first epoch's training loss equals the default kernel's to rounding."""
    config = write_config(workdir / "joint_triton.yaml", "hubert_local", tiny_hubert_ckpt, "joint",
                          {"candidate_bits": [1, 2, 4, 8], "target_avg_bits": 3.0, "search_length": 1,
                           "modules": ALL_GROUPS})
    losses = {}
    for kernel, env in {"default": {}, "triton": {"ESPNET_MPQ_TRITON": "1", "TRITON_INTERPRET": "1"}}.items():
        out = workdir / f"joint_{kernel}"
        proc = subprocess.run(asr_train_command(tiny_asr_corpus, config, out, "--seed", "0"), capture_output=True,
                              text=True, timeout=TRAIN_TIMEOUT_S, cwd=out.parent, env={**os.environ, **env})
        assert proc.returncode == 0, f"asr_train ({kernel}) failed:\n{proc.stderr[-5000:]}"
        assert ("the quantizer runs the Triton kernel (interpreted" in proc.stderr) == (kernel == "triton")
        losses[kernel] = float(re.search(r"\bloss=([-0-9.e]+)", Run(out, proc.stderr).epoch_results(1)).group(1))
    assert losses["triton"] == pytest.approx(losses["default"], rel=1e-3)
