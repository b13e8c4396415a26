"""Specification of the LibriSpeech recipe's data stage.

egs/librispeech/local/synthesize_corpus.py writes an espeak-ng corpus in LibriSpeech's
layout; egs/librispeech/local/prepare_data.py turns a subset of any LibriSpeech-layout
corpus into a Kaldi data directory. Both run as subprocesses, as the recipe runs them.
"""

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

LOCAL = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "local"
SYNTHESIZE = LOCAL / "synthesize_corpus.py"
PREPARE = LOCAL / "prepare_data.py"
TINY = ["--num_train", "6", "--num_dev", "3", "--num_test", "3"]
SIZES = {"train-synth": 6, "dev-synth": 3, "test-synth": 3}

MISSING = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
MISSING += [] if Path("/usr/share/wordnet/data.noun").is_file() else ["wordnet-base"]
needs_espeak = pytest.mark.skipif(
    bool(MISSING), reason=f"synthesis needs {', '.join(MISSING)} (apt-get install espeak-ng sox wordnet-base)"
)


def run(script: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def synthesize(out: Path, *options: object) -> subprocess.CompletedProcess:
    result = run(SYNTHESIZE, "--out", out, *TINY, *options)
    assert result.returncode == 0, result.stderr
    return result


def transcripts(root: Path, subset: str) -> dict[str, str]:
    """{uttid: transcript} over all .trans.txt files of a subset."""
    lines = [line for path in sorted((root / subset).glob("*/*/*.trans.txt")) for line in path.read_text().splitlines()]
    return dict(line.split(" ", 1) for line in lines)


def speakers(root: Path, subset: str) -> set[str]:
    return {path.name for path in (root / subset).iterdir()}


def read_table(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]


def assert_kaldi_data_dir(data: Path) -> None:
    """Sorted (C order), one line per utterance in every file, and spk2utt inverting utt2spk."""
    tables = {name: read_table(data / name) for name in ("wav.scp", "text", "utt2spk")}
    utt_ids = [utt_id for utt_id, _ in tables["wav.scp"]]
    assert utt_ids == sorted(utt_ids, key=str.encode) and len(set(utt_ids)) == len(utt_ids)
    for name, table in tables.items():
        assert [utt_id for utt_id, _ in table] == utt_ids, name
    assert all(Path(path).is_absolute() and Path(path).is_file() for _, path in tables["wav.scp"])
    utt2spk = dict(tables["utt2spk"])
    assert all(utt_id.startswith(f"{spk}-") for utt_id, spk in utt2spk.items())
    spk2utt = read_table(data / "spk2utt")
    assert [spk for spk, _ in spk2utt] == sorted({spk for spk in utt2spk.values()}, key=str.encode)
    assert {spk: utts.split() for spk, utts in spk2utt} == {
        spk: [utt_id for utt_id in utt_ids if utt2spk[utt_id] == spk] for spk in utt2spk.values()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    if MISSING:
        pytest.skip(f"synthesis needs {', '.join(MISSING)}")
    out = tmp_path_factory.mktemp("synth") / "LibriSynth"
    synthesize(out)
    return out


def make_librispeech(root: Path) -> Path:
    """root/dev-clean with two chapters of 16 kHz noise: 84-121123 (3 utterances) and 174-50561 (2)."""
    texts = {("84", "121123"): ["HELLO WORLD", "A SECOND LINE", "THE THIRD"], ("174", "50561"): ["FOUR", "IT'S FIVE"]}
    rng = np.random.default_rng(0)
    for (speaker, chapter), lines in texts.items():
        chapter_dir = root / "dev-clean" / speaker / chapter
        chapter_dir.mkdir(parents=True)
        trans = []
        for index, text in enumerate(lines):
            utt_id = f"{speaker}-{chapter}-{index:04d}"
            soundfile.write(chapter_dir / f"{utt_id}.flac", rng.uniform(-0.1, 0.1, 4000), 16000)
            trans.append(f"{utt_id} {text}\n")
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(trans))
    return root


@pytest.fixture
def librispeech(tmp_path) -> Path:
    return make_librispeech(tmp_path / "LibriSpeech")


def prepare(root: Path, subset: str, out: Path) -> subprocess.CompletedProcess:
    return run(PREPARE, "--root", root, "--subset", subset, "--out", out)


# synthesize_corpus.py

OPTIONAL = ["--num_unlab", "5", "--num_dev_other", "3", "--num_test_other", "4"]
OTHER = ("dev-other-synth", "test-other-synth")


@pytest.fixture(scope="module")
def full_corpus(tmp_path_factory) -> Path:
    """The tiny corpus with the optional subsets: unlabeled audio and the two 'other' sets."""
    if MISSING:
        pytest.skip(f"synthesis needs {', '.join(MISSING)}")
    out = tmp_path_factory.mktemp("synth_full") / "LibriSynth"
    synthesize(out, *OPTIONAL)
    return out


def speaker_table(root: Path) -> dict[str, tuple[str, str, int]]:
    """SPEAKERS.TXT as {speaker id: (subset, variant, rate)}."""
    table = {}
    for line in (root / "SPEAKERS.TXT").read_text().splitlines()[1:]:
        speaker, _, subset, voice = (field.strip() for field in line.split("|"))
        table[speaker] = (subset, voice.split()[0].split("+")[1], int(voice.split("-s ")[1].split()[0]))
    return table


@needs_espeak
def test_optional_subsets_have_their_sizes_and_the_default_subsets_keep_theirs(full_corpus):
    sizes = {**SIZES, "train-unlab-synth": 5, "dev-other-synth": 3, "test-other-synth": 4}
    assert {subset: len(transcripts(full_corpus, subset)) for subset in sizes} == sizes


@needs_espeak
def test_unlabeled_audio_comes_from_the_training_speakers(full_corpus):
    assert speakers(full_corpus, "train-unlab-synth") <= speakers(full_corpus, "train-synth")


@needs_espeak
def test_other_speakers_are_unseen_voices_at_rates_outside_the_training_range(full_corpus):
    sys.path.insert(0, str(LOCAL))
    from synthesize_corpus import DEFAULT_VARIANTS, RATE_WPM

    table = speaker_table(full_corpus)
    other = {spk for subset in OTHER for spk in speakers(full_corpus, subset)}
    seen = {spk for subset in SIZES for spk in speakers(full_corpus, subset)}
    assert other and not other & seen
    assert speakers(full_corpus, OTHER[0]).isdisjoint(speakers(full_corpus, OTHER[1]))
    for spk in other:
        _, variant, rate = table[spk]
        assert variant not in DEFAULT_VARIANTS.split(",")
        assert not RATE_WPM[0] <= rate <= RATE_WPM[1], (spk, rate)


@needs_espeak
def test_other_phrases_never_occur_in_train_nor_in_the_other_held_out_sets(full_corpus):
    texts = {subset: set(transcripts(full_corpus, subset).values()) for subset in (*SIZES, *OTHER)}
    train = texts["train-synth"] | set(transcripts(full_corpus, "train-unlab-synth").values())
    for subset in ("dev-synth", "test-synth", *OTHER):
        assert not texts[subset] & train, subset
    assert not texts[OTHER[0]] & texts[OTHER[1]]
    assert not (texts[OTHER[0]] | texts[OTHER[1]]) & (texts["dev-synth"] | texts["test-synth"])


def test_mixed_noise_has_the_drawn_snr(tmp_path):
    sys.path.insert(0, str(LOCAL))
    from synthesize_corpus import NOISE_COLOURS, Utterance, mix_noise

    speech = 0.1 * np.sin(np.arange(16000) * 2 * np.pi * 200 / 16000)
    for colour in NOISE_COLOURS:
        path = tmp_path / f"{colour}.flac"
        soundfile.write(path, speech, 16000, subtype="PCM_16")
        utt = Utterance("1-1-0000", None, tmp_path, "x", "X", snr_db=12.5, noise_colour=colour, noise_seed=3)
        mix_noise(path, utt)
        mixed, _ = soundfile.read(path)
        noise = mixed - speech
        snr = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
        assert snr == pytest.approx(12.5, abs=0.2), colour


@needs_espeak
def test_corpus_has_librispeech_layout(corpus):
    for subset, size in SIZES.items():
        flacs = sorted((corpus / subset).rglob("*.flac"))
        assert len(flacs) == size
        for path in (corpus / subset).rglob("*"):
            relative = path.relative_to(corpus / subset).as_posix()
            assert re.fullmatch(r"(\d+)(/(\d+)(/\1-\3(-\d{4}\.flac|\.trans\.txt))?)?", relative), relative
        assert sorted(transcripts(corpus, subset)) == sorted(path.stem for path in flacs)


@needs_espeak
def test_audio_is_16khz_mono_and_not_empty(corpus):
    for path in corpus.rglob("*.flac"):
        info = soundfile.info(str(path))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert info.duration > 0.3


@needs_espeak
def test_transcripts_are_upper_case_words_of_the_vocabulary(corpus):
    vocab = set((corpus / "vocab.txt").read_text().split())
    assert len(vocab) == 3000
    for subset in SIZES:
        for text in transcripts(corpus, subset).values():
            assert re.fullmatch(r"[A-Z']+( [A-Z']+){2,9}", text), text
            assert set(text.split()) <= vocab, text


@needs_espeak
def test_dev_and_test_speakers_are_disjoint_from_train_and_each_other(corpus):
    train, dev, test = (speakers(corpus, subset) for subset in SIZES)
    assert len(train) == 6 and len(dev) == 3 and len(test) == 3
    assert not train & dev and not train & test and not dev & test


@needs_espeak
def test_dev_and_test_phrases_are_not_in_train(corpus):
    train, dev, test = (set(transcripts(corpus, subset).values()) for subset in SIZES)
    assert not train & (dev | test)


@needs_espeak
def test_same_seed_gives_identical_corpus_other_seed_does_not(corpus, tmp_path):
    synthesize(tmp_path / "same")
    synthesize(tmp_path / "other", "--seed", "1")
    for subset in SIZES:
        assert transcripts(tmp_path / "same", subset) == transcripts(corpus, subset)
        assert transcripts(tmp_path / "other", subset) != transcripts(corpus, subset)
    for path in corpus.rglob("*.flac"):
        same = tmp_path / "same" / path.relative_to(corpus)
        assert np.array_equal(soundfile.read(same)[0], soundfile.read(path)[0])


@needs_espeak
def test_rerun_writes_only_missing_utterances(corpus, tmp_path):
    copy = shutil.copytree(corpus, tmp_path / "copy")
    (copy / ".done").unlink()
    missing = sorted(copy.rglob("*.flac"))[0]
    missing.unlink()
    before = {path: path.stat().st_mtime_ns for path in copy.rglob("*.flac")}
    result = synthesize(copy)
    assert "synthesized 1 of 12 utterances" in result.stderr
    assert missing.is_file() and (copy / ".done").is_file()
    assert {path: path.stat().st_mtime_ns for path in before} == before


@needs_espeak
def test_rerun_of_a_finished_corpus_does_nothing(corpus, tmp_path):
    copy = shutil.copytree(corpus, tmp_path / "copy")
    result = synthesize(copy)
    assert "already complete" in result.stderr and "synthesized" not in result.stderr
    assert "train-synth" in result.stdout  # the summary is printed all the same


@needs_espeak
def test_rerun_with_other_options_is_refused(corpus, tmp_path):
    copy = shutil.copytree(corpus, tmp_path / "copy")
    result = run(SYNTHESIZE, "--out", copy, *TINY, "--seed", "1")
    assert result.returncode == 1
    assert "synthesized with other options" in result.stderr and "Traceback" not in result.stderr


# prepare_data.py


@needs_espeak
def test_prepare_data_reads_the_synthesized_corpus(corpus, tmp_path):
    for subset, size in SIZES.items():
        assert prepare(corpus, subset, tmp_path / subset).returncode == 0
        assert_kaldi_data_dir(tmp_path / subset)
        assert dict(read_table(tmp_path / subset / "text")) == transcripts(corpus, subset)


def test_prepare_data_writes_a_sorted_consistent_kaldi_dir(librispeech, tmp_path):
    result = prepare(librispeech, "dev-clean", tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert_kaldi_data_dir(tmp_path / "data")
    assert read_table(tmp_path / "data" / "text")[0] == ("174-50561-0000", "FOUR")  # C order: "174" < "84"
    assert read_table(tmp_path / "data" / "utt2spk")[-1] == ("84-121123-0002", "84-121123")  # speaker-chapter


def test_wav_scp_is_read_by_espnet_sound_loader(librispeech, tmp_path):
    from espnet2.fileio.sound_scp import SoundScpReader

    prepare(librispeech, "dev-clean", tmp_path / "data")
    rate, audio = SoundScpReader(str(tmp_path / "data" / "wav.scp"))["84-121123-0000"]
    assert rate == 16000 and audio.shape == (4000,)


def test_root_that_is_not_librispeech_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not audio")
    result = prepare(tmp_path, "dev-clean", tmp_path / "data")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "is not a LibriSpeech directory: expected <subset>/<speaker>/<chapter>/" in result.stderr


def test_missing_subset_lists_the_subsets_there(librispeech, tmp_path):
    result = prepare(librispeech, "test-clean", tmp_path / "data")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "subset 'test-clean' not found" in result.stderr and "subsets there: dev-clean" in result.stderr


def skipped_utterance(librispeech: Path, tmp_path: Path, utt_id: str) -> str:
    """Runs prepare_data; checks utt_id was left out and one skip counted; returns stderr."""
    result = prepare(librispeech, "dev-clean", tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert_kaldi_data_dir(tmp_path / "data")
    assert [utt for utt, _ in read_table(tmp_path / "data" / "text")] == sorted(
        {"84-121123-0000", "84-121123-0001", "84-121123-0002", "174-50561-0000", "174-50561-0001"} - {utt_id}
    )
    assert "skipped 1 of 5 utterances" in result.stderr and "Traceback" not in result.stderr
    return result.stderr


def test_zero_byte_audio_is_named_and_skipped(librispeech, tmp_path):
    flac = librispeech / "dev-clean/84/121123/84-121123-0001.flac"
    flac.write_bytes(b"")
    assert f"skipping {flac}: empty audio file" in skipped_utterance(librispeech, tmp_path, "84-121123-0001")


def test_unreadable_audio_is_named_and_skipped(librispeech, tmp_path):
    flac = librispeech / "dev-clean/84/121123/84-121123-0001.flac"
    flac.write_bytes(b"this is not a flac file")
    assert f"skipping {flac}: unreadable audio file" in skipped_utterance(librispeech, tmp_path, "84-121123-0001")


def empty_flac(sample_rate: int = 16000) -> bytes:
    """A FLAC stream of no samples, as `sox` or `flac` write for empty input: "fLaC" and a
    STREAMINFO block (block sizes 4096, rate, mono, 16 bits, 0 samples = unknown, no MD5)."""
    rate_channels_bits_samples = (sample_rate << 44) | (0 << 41) | (15 << 36) | 0
    streaminfo = struct.pack(">HH3s3sQ16s", 4096, 4096, bytes(3), bytes(3), rate_channels_bits_samples, bytes(16))
    return b"fLaC" + bytes([0x80, 0, 0, len(streaminfo)]) + streaminfo


def test_zero_length_audio_is_named_and_skipped(librispeech, tmp_path):
    flac = librispeech / "dev-clean/84/121123/84-121123-0001.flac"
    flac.write_bytes(empty_flac())
    assert f"skipping {flac}: zero-length audio" in skipped_utterance(librispeech, tmp_path, "84-121123-0001")


def test_empty_transcript_is_reported_and_skipped(librispeech, tmp_path):
    trans = librispeech / "dev-clean/174/50561/174-50561.trans.txt"
    trans.write_text("174-50561-0000 FOUR\n174-50561-0001\n")
    stderr = skipped_utterance(librispeech, tmp_path, "174-50561-0001")
    assert f"skipping 174-50561-0001 in {trans}: empty transcript" in stderr


def test_transcript_line_without_audio_is_reported_and_skipped(librispeech, tmp_path):
    (librispeech / "dev-clean/174/50561/174-50561-0000.flac").unlink()
    stderr = skipped_utterance(librispeech, tmp_path, "174-50561-0000")
    assert "skipping 174-50561-0000 in" in stderr and "no audio file" in stderr
