"""CTC best path: merge repeats, then drop blanks (espnet_mpq.asr.ctc_greedy)."""
import pytest
import yaml

from espnet_mpq.asr.ctc_greedy import check_greedy_options, ctc_best_path


@pytest.mark.parametrize("frames, tokens", [
    ([], []),
    ([0, 0, 0], []),
    ([3, 3, 3], [3]),
    ([0, 3, 3, 0, 3, 5, 5, 0], [3, 3, 5]),  # a blank between repeats keeps both
    ([4, 0, 4, 4, 7, 0, 0, 7], [4, 4, 7, 7]),
])
def test_best_path_merges_repeats_and_drops_blanks(frames, tokens):
    assert ctc_best_path(frames, blank=0) == tokens


def test_best_path_uses_the_given_blank():
    assert ctc_best_path([0, 0, 2, 1, 1, 2], blank=1) == [0, 2, 2]


def test_best_path_drops_the_listed_ids_after_merging():
    assert ctc_best_path([5, 9, 5, 5, 0, 9], blank=0, drop={9}) == [5, 5]


ALLOWED = {"ctc_weight": 1.0, "nbest": 1, "lm_file": None, "lm_train_config": None, "multi_asr": False}


def test_check_accepts_ctc_only_single_best_without_lm():
    check_greedy_options(dict(ALLOWED))


@pytest.mark.parametrize("change, named", [
    ({"ctc_weight": 0.3}, "ctc_weight is 0.3"),
    ({"nbest": 5}, "nbest is 5"),
    ({"lm_file": "exp/lm/valid.loss.best.pth"}, "lm_file"),
    ({"ngram_file": "lm.arpa"}, "ngram_file"),
    ({"multi_asr": True}, "multi_asr"),
])
def test_check_refuses_what_best_path_would_ignore(change, named):
    with pytest.raises(ValueError, match=named):
        check_greedy_options({**ALLOWED, **change})


@pytest.mark.parametrize("value", ["0.5", "2"])
def test_a_ctc_greedy_that_is_not_a_boolean_is_refused_before_decoding(tmp_path, capsys, value):
    from espnet_mpq.bin.asr_inference import main

    config = tmp_path / "decode.yaml"
    config.write_text(f"ctc_greedy: {value}\nctc_weight: 1.0\n")
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(config), "--output_dir", str(tmp_path / "out"),
              "--data_path_and_name_and_type", "missing.scp,speech,sound"])
    assert stop.value.code == 1
    assert f"ctc_greedy {value}: allowed true or false" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("inline", [True, False])
def test_a_beam_wider_than_the_token_list_is_refused_before_decoding(tmp_path, capsys, inline):
    from espnet_mpq.bin.asr_inference import main

    tokens = ["<blank>", "<unk>", "A", "B", "<sos/eos>"]
    token_file = tmp_path / "tokens.txt"
    token_file.write_text("\n".join(tokens) + "\n")
    asr_config = tmp_path / "config.yaml"
    asr_config.write_text(yaml.safe_dump({"token_list": tokens if inline else str(token_file)}))
    with pytest.raises(SystemExit) as stop:
        main(["--asr_train_config", str(asr_config), "--beam_size", "6", "--output_dir", str(tmp_path / "out"),
              "--data_path_and_name_and_type", "missing.scp,speech,sound"])
    assert stop.value.code == 1
    assert f"beam_size 6: at most the model's 5 output tokens ({asr_config})" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
