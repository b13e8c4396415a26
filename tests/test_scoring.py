"""Scoring: alignment counts, the MAPSSWE test, the score CLI, and agreement with NIST SCTK."""
from __future__ import annotations

import doctest
import json
import logging
import math
import random

import pytest

import espnet_mpq.scoring.alignment
import espnet_mpq.scoring.backends
import espnet_mpq.scoring.mapsswe
import espnet_mpq.scoring.sctk
from espnet_mpq.bin import score as score_cli
from espnet_mpq.scoring import (
    align,
    complete_hypotheses,
    count_errors,
    find_sctk,
    mapsswe_test,
    normalize,
    read_text,
    score_python,
    score_sctk,
    segment_errors,
)
from espnet_mpq.scoring.sctk import trn_id

needs_sctk = pytest.mark.skipif(find_sctk() is None, reason="NIST SCTK (sclite, sc_stats) is not installed")


def _hyp_with_errors(ref: list[str], n_errors: int) -> list[str]:
    """Substitute the first n_errors words."""
    return ["X"] * n_errors + ref[n_errors:]


def _synthetic_test_set(seed: int, n_utts: int, error_rates: dict[str, float], vocab_size: int = 50):
    """Random references and, per system, hypotheses with random substitutions, deletions and insertions."""
    rng = random.Random(seed)
    vocab = [f"W{i}" for i in range(vocab_size)]
    refs: dict[str, list[str]] = {}
    hyps: dict[str, dict[str, list[str]]] = {name: {} for name in error_rates}
    for i in range(n_utts):
        utt_id = f"{100 + i % 7}-1240-{i:04d}"
        refs[utt_id] = [rng.choice(vocab) for _ in range(rng.randint(4, 16))]
        for name, rate in error_rates.items():
            hyp = []
            for word in refs[utt_id]:
                x = rng.random()
                if x < rate / 3:
                    continue  # deletion
                hyp.append(rng.choice(vocab) if x < 2 * rate / 3 else word)  # substitution or correct
                if 2 * rate / 3 <= x < rate:
                    hyp.append(rng.choice(vocab))  # insertion
            hyps[name][utt_id] = hyp
    return refs, hyps


# --- alignment and WER ---


def test_normalize_upper_cases_and_splits_on_whitespace():
    assert normalize(" the  Cat's\tmat\n") == ["THE", "CAT'S", "MAT"]


def test_alignment_counts_one_substitution_deletion_and_insertion():
    ali = align("A B C D E F".split(), "A X C E F G".split())
    assert ali.ops == "CSCDCCI"
    assert ali.ref == ("A", "B", "C", "D", "E", "F", None)
    assert ali.hyp == ("A", "X", "C", None, "E", "F", "G")


def test_empty_hypothesis_is_all_deletions_and_empty_reference_all_insertions():
    assert align(["A", "B"], []).ops == "DD"
    assert align([], ["A"]).ops == "I"


def test_wer_sums_errors_over_utterances():
    counts = count_errors([align("A B C D".split(), "A B X D".split()), align("E F".split(), "E F G".split())])
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.words) == (1, 0, 1, 6)
    assert counts.wer == pytest.approx(100 * 2 / 6)


# --- MAPSSWE ---


def test_segments_are_cut_where_both_systems_have_two_correct_words():
    ref = "A B C D E F G".split()
    assert segment_errors(align(ref, "A X C D E F G".split()), align(ref, "A B C D E Y G".split())) == [(1, 0), (0, 1)]


def test_one_correct_word_between_errors_does_not_cut_a_segment():
    ref = "A B C D E".split()
    assert segment_errors(align(ref, "A X C Y E".split()), align(ref, ref)) == [(2, 0)]


def test_an_insertion_breaks_a_run_of_correct_words():
    ref = "A B C D E".split()
    a = align(ref, "A X C D Y".split())
    # Without B's insertion between C and D, the anchors C D would cut A's two errors apart.
    assert segment_errors(a, align(ref, ref)) == [(1, 0), (1, 0)]
    assert segment_errors(a, align(ref, "A B C Z D E".split())) == [(2, 1)]


def test_error_free_stretches_are_no_segments():
    ref = "A B C".split()
    assert segment_errors(align(ref, ref), align(ref, ref)) == []


def test_mapsswe_statistic_matches_a_hand_computation():
    # Segments (e_A, e_B): (1,0) (2,1) (2,0) (1,1) (0,1), so Z = 1, 1, 2, 0, -1:
    # mu = 3/5 = 0.6; s^2 = (0.16 + 0.16 + 1.96 + 0.36 + 2.56) / 4 = 1.3;
    # W = 0.6 / sqrt(1.3 / 5) = 1.176697; p = 2 (1 - Phi(1.176697)) = 0.239317.
    ref = "A B C".split()
    pairs = [(1, 0), (2, 1), (2, 0), (1, 1), (0, 1)]
    result = mapsswe_test([align(ref, _hyp_with_errors(ref, a)) for a, _ in pairs],
                     [align(ref, _hyp_with_errors(ref, b)) for _, b in pairs])
    assert result.n_segments == 5
    assert result.mean == pytest.approx(0.6)
    assert result.std == pytest.approx(math.sqrt(1.3))
    assert result.w == pytest.approx(1.176697, abs=1e-6)
    assert result.p_value == pytest.approx(0.239317, abs=1e-6)
    assert not result.significant


def test_identical_systems_give_p_one_and_are_lossless():
    refs, hyps = _synthetic_test_set(seed=1, n_utts=60, error_rates={"A": 0.2})
    scores = score_python(refs, {"A": hyps["A"], "A2": hyps["A"]}, baseline="A")
    test = scores["A2"].test
    assert test.n_segments > 50
    assert (test.w, test.p_value, test.significant) == (0.0, 1.0, False)
    assert scores["A2"].lossless


def test_clearly_worse_system_is_significant_and_not_lossless():
    refs, hyps = _synthetic_test_set(seed=2, n_utts=80, error_rates={"A": 0.1, "B": 0.3})
    scores = score_python(refs, hyps, baseline="A")
    assert scores["B"].test.w < 0  # A makes fewer errors
    assert scores["B"].test.p_value < 0.05
    assert scores["B"].lossless is False


def test_significantly_better_system_is_lossless():
    refs, hyps = _synthetic_test_set(seed=2, n_utts=80, error_rates={"A": 0.3, "B": 0.1})
    scores = score_python(refs, hyps, baseline="A")
    assert scores["B"].test.significant
    assert scores["B"].lossless is True


def test_fewer_than_two_segments_give_p_one():
    ref = "A B C".split()
    result = mapsswe_test([align(ref, ref)], [align(ref, _hyp_with_errors(ref, 3))])
    assert (result.n_segments, result.w, result.p_value) == (1, 0.0, 1.0)


def test_same_difference_in_every_segment_gives_p_zero():
    ref = "A B C".split()
    result = mapsswe_test([align(ref, ref)] * 3, [align(ref, _hyp_with_errors(ref, 1))] * 3)
    assert (result.n_segments, result.std, result.w, result.p_value) == (3, 0.0, -math.inf, 0.0)


# --- transcript files ---


def test_missing_utterances_become_empty_hypotheses_with_a_warning(caplog):
    refs = {"u-1": ["A"], "u-2": ["B", "C"]}
    with caplog.at_level(logging.WARNING):
        hyps, missing = complete_hypotheses(refs, {"u-1": ["A"]}, "w4")
    assert hyps == {"u-1": ["A"], "u-2": []}
    assert missing == ["u-2"]
    assert "u-2" in caplog.text


def test_hypotheses_of_unknown_utterances_are_an_error():
    with pytest.raises(ValueError, match="not in the reference"):
        complete_hypotheses({"u-1": ["A"]}, {"u-9": ["A"]}, "w4")


def test_read_text_rejects_missing_empty_and_duplicated_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "nope")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_text(tmp_path / "empty")
    (tmp_path / "dup").write_text("u-1 a\nu-1 b\n")
    with pytest.raises(ValueError, match="twice"):
        read_text(tmp_path / "dup")


def test_read_text_keeps_empty_transcripts(tmp_path):
    (tmp_path / "text").write_text("u-1 hello World\nu-2\n")
    assert read_text(tmp_path / "text") == {"u-1": ["HELLO", "WORLD"], "u-2": []}


def test_trn_ids_keep_a_speaker_prefix():
    assert trn_id("103-1240-0000") == "103-1240-0000"
    assert trn_id("spk_utt") == "spk_utt"
    assert trn_id("utt7") == "utt7-utt7"


# --- the CLI ---


def _write_kaldi(path, texts):
    path.write_text("".join(f"{u} {' '.join(w)}\n" for u, w in texts.items()))
    return path


def test_cli_help_works(capsys):
    with pytest.raises(SystemExit) as exit_info:
        score_cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "--baseline" in capsys.readouterr().out


def test_cli_writes_the_json_report(tmp_path, capsys):
    refs, hyps = _synthetic_test_set(seed=3, n_utts=60, error_rates={"fp32": 0.1, "w2": 0.3})
    del hyps["w2"]["100-1240-0000"]
    args = ["--ref", str(_write_kaldi(tmp_path / "ref", refs)), "--backend", "python",
            "--output_json", str(tmp_path / "out.json"), "--errs_dir", str(tmp_path / "errs")]
    for name in hyps:
        args += ["--hyp", f"{name}={_write_kaldi(tmp_path / name, hyps[name])}"]
    score_cli.main(args)
    report = json.loads((tmp_path / "out.json").read_text())
    assert (report["backend"], report["baseline"], report["num_utterances"]) == ("python", "fp32", 60)
    fp32, w2 = report["systems"]["fp32"], report["systems"]["w2"]
    assert (fp32["mapsswe"], fp32["lossless"]) == (None, None)
    assert w2["missing_utterances"] == ["100-1240-0000"]
    assert w2["lossless"] is False and w2["mapsswe"]["significant"] is True
    assert w2["errors"] > fp32["errors"] and w2["words"] == fp32["words"] == sum(map(len, refs.values()))
    assert "w2" in capsys.readouterr().out
    assert (tmp_path / "errs" / "errs-w2.txt").read_text().startswith("%WER")


def test_cli_rejects_an_empty_hypothesis_file_in_one_line(tmp_path, capsys):
    ref = _write_kaldi(tmp_path / "ref", {"u-1": ["A"]})
    (tmp_path / "hyp").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        score_cli.main(["--ref", str(ref), "--hyp", f"a={tmp_path / 'hyp'}", "--backend", "python",
                        "--output_json", str(tmp_path / "out.json")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: transcript file is empty: {tmp_path / 'hyp'}\n"
    assert not (tmp_path / "out.json").exists()


def _missing_quarter(tmp_path, error_rates):
    refs, hyps = _synthetic_test_set(seed=5, n_utts=80, error_rates=error_rates)
    for utt in list(refs)[::4]:
        del hyps["q"][utt]
    return ["--ref", str(_write_kaldi(tmp_path / "ref", refs)), "--backend", "python", "--baseline", "fp32",
            "--output_json", str(tmp_path / "out.json"),
            *[arg for name in hyps for arg in ("--hyp", f"{name}={_write_kaldi(tmp_path / name, hyps[name])}")]]


def test_a_system_missing_utterances_is_never_lossless_and_the_table_counts_them(tmp_path, capsys):
    # A 100% WER baseline: deleting a quarter of q's hypotheses cannot make q significantly worse,
    # yet q failed on those utterances.
    score_cli.main(_missing_quarter(tmp_path, {"fp32": 1.0, "q": 1.0}))
    q = json.loads((tmp_path / "out.json").read_text())["systems"]["q"]
    assert len(q["missing_utterances"]) == 20 and q["lossless"] is False
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("q "))
    assert row.split()[3] == "20" and row.split()[-1] == "no"


def test_a_baseline_missing_utterances_stops_the_scoring(tmp_path, capsys):
    args = _missing_quarter(tmp_path, {"q": 0.1, "fp32": 0.1})
    args[args.index("--baseline") + 1] = "q"
    with pytest.raises(SystemExit) as exit_info:
        score_cli.main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: baseline 'q'") and "misses 20 of 80 utterances" in err and err.count("\n") == 1
    assert not (tmp_path / "out.json").exists()


def test_documentation_examples_run():
    for module in (espnet_mpq.scoring, espnet_mpq.scoring.alignment, espnet_mpq.scoring.mapsswe,
                   espnet_mpq.scoring.sctk, espnet_mpq.scoring.backends):
        assert doctest.testmod(module).failed == 0, module.__name__


# --- agreement with NIST SCTK ---


@needs_sctk
def test_python_and_sctk_agree_on_wer_and_verdict():
    # B has A's error rate (p about 0.69 here), C a much higher one (p about 1e-19): both verdicts are far
    # from alpha, so they must agree. Totals must agree exactly; p and W within tolerances, because
    # (1) sc_stats reads Phi from a table at the z just below |W| (0.01 steps) and prints 3 decimals: up
    #     to 2 * phi(0) * 0.01 + 0.0005 = 0.0085 in p;
    # (2) on ties between equally short alignments jiwer and sclite place errors differently (sclite
    #     prefers fewer substitutions), which moves segment boundaries: W differs by a few percent.
    refs, hyps = _synthetic_test_set(seed=0, n_utts=100, error_rates={"A": 0.1, "B": 0.1, "C": 0.25})
    python, sctk = score_python(refs, hyps, "A"), score_sctk(refs, hyps, "A")
    for name in hyps:
        assert (python[name].counts.errors, python[name].counts.words) == (
            sctk[name].counts.errors, sctk[name].counts.words), name
    for name in ("B", "C"):
        p_test, s_test = python[name].test, sctk[name].test
        assert p_test.n_segments > 50
        assert p_test.significant == s_test.significant, name
        assert python[name].lossless == sctk[name].lossless, name
        assert abs(p_test.p_value - s_test.p_value) <= 0.02, name
        assert abs(p_test.w - s_test.w) <= 0.05 * max(1.0, abs(p_test.w)), name
    assert not python["B"].test.significant and python["C"].test.significant


@needs_sctk
def test_sctk_gives_identical_systems_p_one():
    refs, hyps = _synthetic_test_set(seed=1, n_utts=20, error_rates={"A": 0.2})
    test = score_sctk(refs, {"A": hyps["A"], "A2": hyps["A"]}, "A")["A2"].test
    assert (test.w, test.p_value_text, test.significant) == (0.0, "1.000", False)


@needs_sctk
def test_sctk_handles_two_error_free_systems():
    refs = {"u-1": ["A", "B"]}
    test = score_sctk(refs, {"A": refs, "B": refs}, "A")["B"].test
    assert (test.n_segments, test.p_value, test.significant) == (0, 1.0, False)


@needs_sctk
def test_sclite_counts_one_more_error_than_jiwer_on_a_shifted_run():
    # Known difference of the backends: sclite minimises 4S + 3D + 3I, jiwer S + D + I.
    refs, hyps = {"u-1": "A B C D E".split()}, {"h": {"u-1": "D E X Y Z".split()}}
    assert score_python(refs, hyps, "h")["h"].counts.errors == 5
    assert score_sctk(refs, hyps, "h")["h"].counts.errors == 6
