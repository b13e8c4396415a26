"""Specification of egs/librispeech/local/lm_text.py (the built-in corpus's LM text)."""
import sys
from pathlib import Path

import pytest

LOCAL = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "local"
sys.path.insert(0, str(LOCAL))
import lm_text  # noqa: E402

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by\n"
NOUN = ('00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known; '
        '"the door swung open"; "he offered odds of two to one"\n'
        '00002137 03 n 02 abstraction 0 0 | a general concept (formed by extracting common features); '
        '"her neat dress was blue"; "1990 was a year"\n')


@pytest.fixture
def wordnet(tmp_path) -> Path:
    root = tmp_path / "wordnet"
    root.mkdir()
    for name in lm_text.WORDNET_FILES:
        (root / name).write_text(HEADER + (NOUN if name == "data.noun" else ""), encoding="utf-8")
    return root


def run(tmp_path, wordnet, *extra) -> list[str]:
    out = tmp_path / "lm" / "text"
    assert lm_text.main(["--wordnet_dir", str(wordnet), "--output", str(out), *extra]) == 0
    return out.read_text().splitlines()


def test_definitions_and_examples_normalised_and_keyed(tmp_path, wordnet):
    held_out = tmp_path / "text"
    held_out.write_text("utt1 SOMETHING NOT IN WORDNET\n")
    lines = run(tmp_path, wordnet, "--exclude", str(held_out))
    assert lines == [
        "wordnet-000001 THE DOOR SWUNG OPEN",
        "wordnet-000002 HE OFFERED ODDS OF TWO TO ONE",
        "wordnet-000003 THAT WHICH IS PERCEIVED OR KNOWN",
        "wordnet-000004 HER NEAT DRESS WAS BLUE",
        "wordnet-000005 A GENERAL CONCEPT FORMED BY EXTRACTING COMMON FEATURES",
    ]  # "1990 was a year" has digits: dropped


def test_held_out_transcripts_never_enter_even_inside_a_longer_line(tmp_path, wordnet):
    corpus = tmp_path / "corpus" / "test-synth" / "1" / "2"
    corpus.mkdir(parents=True)
    (corpus / "1-2.trans.txt").write_text("1-2-0000 HER NEAT DRESS\n1-2-0001 TWO TO ONE\n")
    text = run(tmp_path, wordnet, "--exclude", str(tmp_path / "corpus" / "test-synth"))
    joined = "\n".join(text)
    assert "NEAT DRESS" not in joined and "TWO TO ONE" not in joined
    assert "wordnet-000001 THE DOOR SWUNG OPEN" in text


def test_whole_words_only(tmp_path, wordnet):
    held_out = tmp_path / "text"
    held_out.write_text("u THE DOO\n")  # a prefix of "THE DOOR", not a run of words of it
    assert "wordnet-000001 THE DOOR SWUNG OPEN" in run(tmp_path, wordnet, "--exclude", str(held_out))


def test_max_lines(tmp_path, wordnet):
    held_out = tmp_path / "text"
    held_out.write_text("u NOTHING\n")
    assert len(run(tmp_path, wordnet, "--exclude", str(held_out), "--max_lines", "2")) == 2


def test_no_line_left_is_an_error_not_an_empty_file(tmp_path, wordnet, capsys):
    held_out = tmp_path / "text"
    held_out.write_text("u THE\nv A\nw HE\nx THAT\ny HER\n")  # every line holds one of these words
    out = tmp_path / "lm" / "text"
    assert lm_text.main(["--wordnet_dir", str(wordnet), "--exclude", str(held_out), "--output", str(out)]) == 1
    assert "no line of LM text left (5 dropped as held out)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing exclude", "directory without transcripts", "no wordnet"])
def test_bad_input_is_one_error_line(tmp_path, wordnet, capsys, case):
    exclude, root = tmp_path / "nope.txt", wordnet
    if case == "directory without transcripts":
        exclude = tmp_path / "empty"
        exclude.mkdir()
    if case == "no wordnet":
        exclude, root = tmp_path / "text", tmp_path / "no_wordnet"
        exclude.write_text("u X\n")
    out = tmp_path / "lm" / "text"
    assert lm_text.main(["--wordnet_dir", str(root), "--exclude", str(exclude), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists()
