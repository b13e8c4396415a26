"""Specification of egs/librispeech/local/reference_results.py (the 32-bit reference's figures)."""
import json
import sys
from pathlib import Path

import pytest

LOCAL = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "local"
sys.path.insert(0, str(LOCAL))
import reference_results  # noqa: E402

EPOCH_LINE = ("[vm] 2026-11-26 13:52:11,000 (trainer:394) INFO: {e}epoch results: [train] loss_ctc=90.1, "
              "train_time=3.4, time={train}, total_count=125, [valid] loss_ctc=79.0, cer_ctc={cer}, "
              "loss=79.0, time={valid}, total_count=10, [att_plot] time=8.05 seconds, total_count=0\n")


def write_run(exp: Path, upstream: str) -> None:
    fp32 = exp / "asr_fp32"
    fp32.mkdir(parents=True)
    ckpt = exp / "upstream" / ("hubert_iter0" if upstream == "ssl" else "random") / "latest.pth"
    (fp32 / "config.yaml").write_text("token_type: char\ntoken_list:\n- <blank>\n- <unk>\n- A\n- <sos/eos>\n"
                                      f"frontend_conf:\n  upstream: espnet_hubert_local\n  path_or_url: {ckpt}\n")
    (fp32 / "train.log").write_text(
        EPOCH_LINE.format(e=1, train="7 minutes and 30.5 seconds", valid="10.5 seconds", cer=0.999)
        + EPOCH_LINE.format(e=2, train="1 hour, 1 minute and 1 second", valid="9 seconds", cer=0.778))
    for dset, wer in (("test_synth", 40.0), ("test_other_synth", 60.0)):
        (fp32 / f"decode_{dset}").mkdir()
        (fp32 / f"decode_{dset}" / "score.json").write_text(json.dumps(
            {"num_utterances": 200, "systems": {"fp32": {"wer": wer, "words": 1073}}}))
    if upstream == "ssl":
        ssl = exp / "upstream" / "hubert_iter0"
        ssl.mkdir(parents=True)
        (ssl / "pretrain_time.json").write_text('{"seconds": 655, "device": "CPU (2 cores)"}')
        (ssl / "train.log").write_text("1epoch results: [train] loss=3.2e+03, acc_m=0.071, [valid] loss=2.3e+03, "
                                       "acc_m=0.060, time=12.04 seconds\n")


@pytest.mark.parametrize("upstream", ["ssl", "random"])
def test_collect_writes_the_reference_json(tmp_path, upstream):
    write_run(tmp_path / "exp", upstream)
    out = tmp_path / "results" / "reference.json"
    reference_results.main(["collect", "--exp", str(tmp_path / "exp"), "--upstream", upstream,
                            "--test_clean", "test_synth", "--test_other", "test_other_synth",
                            "--device", "CPU (9 cores)", "--output", str(out)])
    result = json.loads(out.read_text())
    assert result["test_clean"] == {"wer": 40.0, "utterances": 200, "words": 1073}
    assert result["units"] == {"token_type": "char", "tokens": 4}
    assert result["test_other"]["wer"] == 60.0
    assert result["finetune_s"] == pytest.approx(450.5 + 10.5 + 3661 + 9)
    assert result["finetune_s_from"] == "ESPnet epoch times"
    assert result["valid_cer_per_epoch"] == [0.999, 0.778]
    assert result["lm"] is None  # decode dirs without decoding.txt: decoded before run.sh had LMs
    if upstream == "ssl":
        assert (result["pretrain_s"], result["device"]) == (655, "CPU (2 cores)")
        assert result["pretrain_valid_acc_m_per_epoch"] == [0.06]
    else:
        assert (result["pretrain_s"], result["device"]) == (0, "CPU (9 cores)")


def collect_lm_run(tmp_path, clean_lm: str, other_lm: str, lm_clock: bool = True) -> dict:
    exp = tmp_path / "exp"
    write_run(exp, "ssl")
    for dset, lm in (("test_synth", clean_lm), ("test_other_synth", other_lm)):
        (exp / "asr_fp32" / f"decode_{dset}" / "decoding.txt").write_text(f"lm_file: {lm}\n")
    if lm_clock:
        (exp / "lm").mkdir()
        (exp / "lm" / "train_time.json").write_text('{"seconds": 1620, "runs": 1, "device": "CPU (2 cores)"}')
    out = tmp_path / "reference.json"
    reference_results.main(["collect", "--exp", str(exp), "--upstream", "ssl", "--test_clean", "test_synth",
                            "--test_other", "test_other_synth", "--output", str(out)])
    return json.loads(out.read_text())


def test_collect_names_the_lm_both_test_sets_were_decoded_with(tmp_path, capsys):
    result = collect_lm_run(tmp_path, "/w/exp/lm/valid.loss.best.pth", "/w/exp/lm/valid.loss.best.pth")
    assert result["lm"] == {"lm_file": "/w/exp/lm/valid.loss.best.pth", "train_s": 1620}
    assert result["pretrain_s"] == 655  # the LM's time is its own figure
    capsys.readouterr()
    reference_results.main(["table", str(tmp_path / "reference.json")])
    assert capsys.readouterr().out.splitlines()[2].split("|")[3].strip() == "yes (1620)"


def test_collect_refuses_test_sets_decoded_with_different_lms(tmp_path):
    with pytest.raises(SystemExit, match="different LMs"):
        collect_lm_run(tmp_path, "/w/exp/lm/valid.loss.best.pth", "none")


def test_collect_refuses_an_lm_decoding_without_the_lm_clock(tmp_path):
    with pytest.raises(SystemExit, match="train_time.json not found"):
        collect_lm_run(tmp_path, "/w/lm.pth", "/w/lm.pth", lm_clock=False)


def test_table_puts_runs_side_by_side(tmp_path, capsys):
    paths = []
    for upstream in ("ssl", "random"):
        write_run(tmp_path / upstream / "exp", upstream)
        paths.append(tmp_path / f"{upstream}.json")
        reference_results.main(["collect", "--exp", str(tmp_path / upstream / "exp"), "--upstream", upstream,
                                "--test_clean", "test_synth", "--test_other", "test_other_synth",
                                "--output", str(paths[-1])])
    capsys.readouterr()
    reference_results.main(["table", *map(str, paths)])
    rows = capsys.readouterr().out.splitlines()
    assert [row.split("|")[1].strip() for row in rows[2:]] == ["ssl", "random"]
    assert "40.00 (1073)" in rows[2] and "0.999 0.778" in rows[2]
    assert rows[2].split("|")[2].strip() == "char (4 tokens)"
    assert rows[2].split("|")[3].strip() == "none"


def test_collect_reads_a_token_list_file(tmp_path):
    write_run(tmp_path / "exp", "random")
    (tmp_path / "tokens.txt").write_text("<blank>\n<unk>\n\u2581THE\nS\n<sos/eos>\n")
    (tmp_path / "exp" / "asr_fp32" / "config.yaml").write_text(
        f"token_type: bpe\ntoken_list: {tmp_path / 'tokens.txt'}\n")
    out = tmp_path / "ref.json"
    reference_results.main(["collect", "--exp", str(tmp_path / "exp"), "--upstream", "random",
                            "--test_clean", "test_synth", "--test_other", "test_other_synth", "--output", str(out)])
    assert json.loads(out.read_text())["units"] == {"token_type": "bpe", "tokens": 5}


def test_collect_without_the_config_names_it(tmp_path):
    write_run(tmp_path / "exp", "random")
    (tmp_path / "exp" / "asr_fp32" / "config.yaml").unlink()
    with pytest.raises(SystemExit, match="config.yaml not found"):
        reference_results.main(["collect", "--exp", str(tmp_path / "exp"), "--upstream", "random",
                                "--test_clean", "test_synth", "--test_other", "test_other_synth",
                                "--output", str(tmp_path / "ref.json")])


def test_collect_takes_the_wall_clock_of_stage_8_when_run_sh_wrote_it(tmp_path):
    write_run(tmp_path / "exp", "random")
    (tmp_path / "exp" / "asr_fp32" / "train_time.json").write_text('{"seconds": 5000, "runs": 2, "device": "x"}')
    out = tmp_path / "ref.json"
    reference_results.main(["collect", "--exp", str(tmp_path / "exp"), "--upstream", "random",
                            "--test_clean", "test_synth", "--test_other", "test_other_synth", "--output", str(out)])
    result = json.loads(out.read_text())
    assert (result["finetune_s"], result["finetune_s_from"]) == (5000, "stage 8 wall clock")


@pytest.mark.parametrize("text", ["", "token_type: char\n", "- just\n- a list\n"])
def test_collect_with_a_config_that_has_no_units_names_it(tmp_path, text):
    write_run(tmp_path / "exp", "random")
    (tmp_path / "exp" / "asr_fp32" / "config.yaml").write_text(text)
    with pytest.raises(SystemExit, match="no token_type or token_list"):
        reference_results.main(["collect", "--exp", str(tmp_path / "exp"), "--upstream", "random",
                                "--test_clean", "test_synth", "--test_other", "test_other_synth",
                                "--output", str(tmp_path / "ref.json")])
    assert not (tmp_path / "ref.json").exists()


@pytest.mark.parametrize("run, label", [("ssl", "random"), ("random", "ssl")])
def test_collect_refuses_an_upstream_label_the_run_contradicts(tmp_path, run, label):
    write_run(tmp_path / "exp", run)
    if run == "random":  # a stage-6 directory that this run did not fine-tune from
        (tmp_path / "exp" / "upstream" / "hubert_iter0").mkdir(parents=True)
        (tmp_path / "exp" / "upstream" / "hubert_iter0" / "pretrain_time.json").write_text('{"seconds": 1, "device": "x"}')
    out = tmp_path / "ref.json"
    with pytest.raises(SystemExit, match=f"--upstream {label}, but .*fine-tuned from"):
        reference_results.main(["collect", "--exp", str(tmp_path / "exp"), "--upstream", label, "--test_clean",
                                "test_synth", "--test_other", "test_other_synth", "--output", str(out)])
    assert not out.exists()


def test_collect_before_pretraining_finished_names_the_missing_clock(tmp_path):
    write_run(tmp_path / "exp", "ssl")
    (tmp_path / "exp" / "upstream" / "hubert_iter0" / "pretrain_time.json").unlink()
    with pytest.raises(SystemExit, match="pretrain_time.json not found: stage 6"):
        reference_results.main(["collect", "--exp", str(tmp_path / "exp"), "--upstream", "ssl", "--test_clean",
                                "test_synth", "--test_other", "test_other_synth", "--output", str(tmp_path / "r.json")])
