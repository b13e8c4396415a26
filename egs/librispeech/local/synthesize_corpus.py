#!/usr/bin/env python3
"""Synthesize a small English read-speech corpus in LibriSpeech's layout with espeak-ng.

Usage:
    python local/synthesize_corpus.py --out db/LibriSynth
    python local/synthesize_corpus.py --out db/LibriSynth \\
        --num_train 5000 --num_dev 300 --num_test 300 --vocab_size 3000 --seed 0 --nj 2
    python local/synthesize_corpus.py --out db/LibriSynth --num_train 2000 --num_unlab 4000 \\
        --num_dev 150 --num_test 300 --num_dev_other 150 --num_test_other 300

Writes, as LibriSpeech does (so local/prepare_data.py reads it like the real corpus):

    <out>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac  16 kHz mono
    <out>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   `<uttid> UPPER CASE TEXT`

and beside the subsets:

    <out>/SPEAKERS.TXT     `ID | SEX | SUBSET | VOICE`: the espeak-ng voice of each speaker
    <out>/vocab.txt        the allowed words, most frequent first
    <out>/synthesis.json   the options the corpus was made with
    <out>/.done            written last

Text: the quoted example phrases of WordNet (wordnet-base: data.noun, data.verb,
data.adj), normalised to LibriSpeech style (upper case, letters and apostrophes,
single spaces), 3 to 10 words, and kept only if every word is among the
--vocab_size most frequent words of all phrases. Phrases without digits,
abbreviations or acronyms only, so the audio says exactly the transcript.
Dev and test phrases never occur in train.

Speakers: a speaker is one espeak-ng voice plus variant (e.g. en-gb-scotland+f2)
with its own speaking rate and pitch. Train, dev and test speakers are disjoint.
Each speaker's utterances are grouped into chapters of UTTS_PER_CHAPTER.

Optional subsets (none unless their size is given):

    --num_unlab       train-unlab-synth: more audio of the training speakers (the training
                      phrases again, dealt to other speakers), for self-supervised
                      pre-training; its transcripts are written but a recipe ignores them
    --num_dev_other   dev-other-synth / test-other-synth: harder conditions, as
    --num_test_other  LibriSpeech's "other": voices whose variant (--other_variants) no
                      training speaker has, speaking rates outside the training range
                      (OTHER_RATE_WPM) and additive noise (white, pink or brown, drawn per
                      utterance) at an SNR drawn from OTHER_SNR_DB. Speakers disjoint from
                      every other subset, phrases never in train (nor in the other
                      held-out sets).

The corpus depends on the options only (not on --nj): the same --seed gives the same
files. A re-run skips utterances already written (audio is written under a
temporary name, then renamed), so an interrupted run resumes where it stopped;
a re-run with other options into the same --out is refused.
"""

import argparse
import dataclasses
import itertools
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile

from librispeech_layout import AUDIO_SUFFIX, SAMPLE_RATE, transcript_path, utterance_id, write_text_atomic

# espeak-ng 1.51 English voices that honour +variant. Not "en-gb": it silently ignores
# the variant, so en-gb+m1 and en-gb+f1 sound the same; "en" is the same British voice.
DEFAULT_VOICES = "en,en-us,en-us-nyc,en-gb-scotland,en-gb-x-rp,en-gb-x-gbclan,en-gb-x-gbcwmd,en-029"
DEFAULT_VARIANTS = "m1,m2,m3,m4,m5,m6,m7,m8,f1,f2,f3,f4,f5"
RATE_WPM = (140, 190)  # espeak-ng -s, drawn once per speaker
OTHER_RATE_WPM = ((105, 130), (200, 235))  # "other" speakers: slower or faster than any train speaker
OTHER_SNR_DB = (10.0, 20.0)  # "other" utterances: additive noise, SNR drawn per utterance
NOISE_COLOURS = ("white", "pink", "brown")  # spectral slope 0, -3, -6 dB/octave
# espeak-ng variants that no training speaker uses (named variants shipped with espeak-ng 1.51).
DEFAULT_OTHER_VARIANTS = "Andy,Annie,Denis,Gene,Jacky,Lee,Michael,Storm,Tweaky,edward,john,max,paul,quincy,steph,zac"
PITCH = (30, 70)  # espeak-ng -p (0-99, default 50), drawn once per speaker
FIRST_SPEAKER_ID = 1000  # speaker ids are 1000 + index in the voice x variant table
UTTS_PER_CHAPTER = 25
WORDS_PER_PHRASE = (3, 10)
WORDNET_FILES = ("data.noun", "data.verb", "data.adj")
PROGRESS_EVERY = 500


class CorpusError(Exception):
    """A problem reported to the user as one line, without a traceback."""


@dataclasses.dataclass(frozen=True)
class Speaker:
    speaker_id: int
    voice: str  # e.g. "en-gb-scotland"
    variant: str  # e.g. "f2"
    sex: str  # "M" or "F", from the variant
    rate: int
    pitch: int

    def describe(self) -> str:
        return f"{self.voice}+{self.variant} -s {self.rate} -p {self.pitch}"


@dataclasses.dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: Speaker
    chapter_dir: Path
    spoken: str  # what espeak-ng reads, in the phrase's own case
    transcript: str  # spoken.upper()
    snr_db: float | None = None  # additive noise at this SNR ("other" subsets); None: clean
    noise_colour: str = "white"
    noise_seed: int = 0

    @property
    def audio_path(self) -> Path:
        return self.chapter_dir / f"{self.utt_id}{AUDIO_SUFFIX}"


def normalise(example: str) -> str | None:
    """A WordNet example in LibriSpeech style (original case kept for espeak-ng), or None.

    Hyphens become spaces, sentence punctuation and quote marks are dropped. Phrases
    with digits, symbols, inner full stops (abbreviations) or all-capital words
    (acronyms, which espeak-ng spells out) are rejected, as are phrases outside
    WORDS_PER_PHRASE.
    """
    text = re.sub(r"[-,;:!?]", " ", example).strip().rstrip(".")
    if not re.fullmatch(r"[A-Za-z' ]+", text):
        return None
    words = [word.strip("'") for word in text.split()]
    words = [word for word in words if word]
    if any(len(word) > 1 and word.isupper() for word in words):
        return None
    if not WORDS_PER_PHRASE[0] <= len(words) <= WORDS_PER_PHRASE[1]:
        return None
    return " ".join(words)


def wordnet_glosses(wordnet_dir: Path, names: tuple[str, ...] = WORDNET_FILES):
    """The gloss (definitions; "quoted examples") of every synset of WordNet's data files ``names``."""
    for name in names:
        path = wordnet_dir / name
        if not path.is_file():
            raise CorpusError(f"{path} not found: install wordnet-base or pass --wordnet_dir")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:  # license header
                continue
            yield line.split("|", 1)[1]


def read_phrases(wordnet_dir: Path) -> list[str]:
    """Distinct normalised WordNet example phrases, sorted by transcript."""
    by_transcript: dict[str, str] = {}
    for gloss in wordnet_glosses(wordnet_dir):
        for example in re.findall(r'"([^"]*)"', gloss):
            phrase = normalise(example)
            if phrase is not None:
                by_transcript.setdefault(phrase.upper(), phrase)
    return [by_transcript[key] for key in sorted(by_transcript)]


def restrict_vocabulary(phrases: list[str], vocab_size: int) -> tuple[list[str], list[str]]:
    """The vocab_size most frequent words (ties alphabetical) and the phrases using only them."""
    counts = Counter(word for phrase in phrases for word in phrase.upper().split())
    vocab = sorted(counts, key=lambda word: (-counts[word], word))[:vocab_size]
    allowed = set(vocab)
    return vocab, [p for p in phrases if set(p.upper().split()) <= allowed]


def espeak_names(*espeak_args: str) -> dict[str, str]:
    """Names `espeak-ng --voices...` accepts, mapped to the Age/Gender column."""
    listing = subprocess.run(["espeak-ng", *espeak_args], capture_output=True, text=True, check=True).stdout
    names = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        gender = fields[2].split("/")[-1]
        for name in (fields[1], fields[4], fields[4].split("/")[-1], *re.findall(r"\((\S+) \d+\)", line)):
            names[name] = gender
    return names


def make_speakers(
    voices: list[str], variants: list[str], rng: random.Random, first_id: int = FIRST_SPEAKER_ID,
    rate_ranges: tuple[tuple[int, int], ...] = (RATE_WPM,),
) -> list[Speaker]:
    """One speaker per voice x variant, in table order, each with a drawn rate and pitch.

    The rate is drawn from ``rate_ranges`` (from one of them, chosen at random, when there
    are several: the "other" conditions use OTHER_RATE_WPM, outside the training range).
    """
    known_voices, known_variants = espeak_names("--voices"), espeak_names("--voices=variant")
    for names, known, listing in ((voices, known_voices, "--voices"), (variants, known_variants, "--voices=variant")):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CorpusError(f"espeak-ng does not know {', '.join(unknown)} (see espeak-ng {listing})")
    table = [(voice, variant) for voice in voices for variant in variants]
    return [
        Speaker(
            speaker_id=first_id + index,
            voice=voice,
            variant=variant,
            sex=known_variants[variant],
            rate=rng.randint(*(rate_ranges[0] if len(rate_ranges) == 1 else rng.choice(rate_ranges))),
            pitch=rng.randint(*PITCH),
        )
        for index, (voice, variant) in enumerate(table)
    ]


def add_noise(utterances: list[Utterance], rng: random.Random) -> list[Utterance]:
    """The utterances with an SNR (OTHER_SNR_DB), a noise colour and a noise seed drawn for each."""
    return [
        dataclasses.replace(
            utt, snr_db=round(rng.uniform(*OTHER_SNR_DB), 2), noise_colour=rng.choice(NOISE_COLOURS),
            noise_seed=rng.randrange(2**31),
        )
        for utt in utterances
    ]


def coloured_noise(num_samples: int, colour: str, seed: int) -> "np.ndarray":
    """Unit-power Gaussian noise with a 1/f^a power spectrum (white a=0, pink a=1, brown a=2), (num_samples,)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    exponent = NOISE_COLOURS.index(colour)  # power ~ 1/f^a, amplitude ~ 1/f^(a/2)
    freqs = np.fft.rfftfreq(num_samples)
    freqs[0] = freqs[1] if num_samples > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=num_samples)
    return noise / max(np.sqrt(np.mean(noise**2)), 1e-12)


def mix_noise(path: Path, utt: Utterance) -> None:
    """Adds utt's noise to the audio file at ``path`` at utt.snr_db (power over the whole utterance), in place."""
    import numpy as np

    speech, rate = soundfile.read(str(path), dtype="float64")
    power = np.mean(speech**2) if len(speech) else 0.0
    noise = coloured_noise(len(speech), utt.noise_colour, utt.noise_seed) * np.sqrt(power / 10 ** (utt.snr_db / 10))
    mixed = speech + noise
    peak = np.max(np.abs(mixed)) if len(mixed) else 0.0
    if peak > 0.99:  # scale down rather than clip: the SNR stays as drawn
        mixed *= 0.99 / peak
    soundfile.write(str(path), mixed, rate, subtype="PCM_16", format="FLAC")


def plan_subset(
    subset_dir: Path, num_utts: int, phrases: list[str], speakers: list[Speaker], first_chapter: int
) -> list[Utterance]:
    """Deals phrases to speakers in turn; each speaker's share is cut into chapters.

    Phrases are reused (by other speakers) only when num_utts exceeds len(phrases).
    """
    shares: dict[Speaker, list[str]] = defaultdict(list)
    for index in range(num_utts):
        shares[speakers[index % len(speakers)]].append(phrases[index % len(phrases)])
    utterances, chapter = [], first_chapter
    for speaker, share in shares.items():
        for start in range(0, len(share), UTTS_PER_CHAPTER):
            chapter_dir = subset_dir / str(speaker.speaker_id) / str(chapter)
            for index, spoken in enumerate(share[start : start + UTTS_PER_CHAPTER]):
                utt_id = utterance_id(speaker.speaker_id, chapter, index)
                utterances.append(Utterance(utt_id, speaker, chapter_dir, spoken, spoken.upper()))
            chapter += 1
    return utterances


def run_tool(command: list[str], stdin: bytes, utt: Utterance) -> bytes:
    result = subprocess.run(command, input=stdin, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise CorpusError(f"{command[0]} failed on {utt.utt_id} ({utt.speaker.describe()}): {message}")
    return result.stdout


def synthesize(utt: Utterance) -> bool:
    """Writes utt.audio_path (16 kHz mono FLAC) unless it exists; True if written.

    espeak-ng writes 22.05 kHz wav to stdout; sox resamples and encodes it, in
    repeatable mode (-R) so that its dither is the same on every run.
    """
    if utt.audio_path.exists():
        return False
    voice = utt.speaker
    espeak = ["espeak-ng", "-v", f"{voice.voice}+{voice.variant}", "-s", str(voice.rate), "-p", str(voice.pitch)]
    wav = run_tool([*espeak, "--stdout"], utt.spoken.encode(), utt)  # text on stdin: never read as an option
    tmp = utt.audio_path.with_name(f".{utt.audio_path.name}.tmp")
    sox = ["sox", "-R", "-V1", "-t", "wav", "-", "-t", "flac", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp)]
    run_tool(sox, wav, utt)
    if utt.snr_db is not None:
        mix_noise(tmp, utt)
    os.replace(tmp, utt.audio_path)
    return True


def synthesize_all(utterances: list[Utterance], nj: int) -> None:
    """Runs `nj` espeak-ng | sox pipelines at a time; stops at the first failure."""
    for chapter_dir in {utt.chapter_dir for utt in utterances}:
        chapter_dir.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(nj)
    written = 0
    try:
        for done, was_written in enumerate(pool.map(synthesize, utterances), 1):
            written += was_written
            if done % PROGRESS_EVERY == 0:
                logging.info("%d/%d utterances", done, len(utterances))
    finally:
        pool.shutdown(cancel_futures=True)
    already = len(utterances) - written
    logging.info("synthesized %d of %d utterances (%d already there)", written, len(utterances), already)


def write_transcripts(utterances: list[Utterance]) -> None:
    chapters: dict[Path, list[str]] = defaultdict(list)
    for utt in utterances:
        chapters[utt.chapter_dir].append(f"{utt.utt_id} {utt.transcript}\n")
    for chapter_dir, lines in chapters.items():
        write_text_atomic(transcript_path(chapter_dir), "".join(lines))


def summarize(out: Path, subsets: list[str]) -> str:
    """A table of utterances, speakers, hours and distinct words per subset, read from disk."""
    rows = [f"{'subset':<16} {'utterances':>10} {'speakers':>8} {'hours':>7} {'words':>6}"]
    for subset in subsets:
        lines = [line for trans in sorted((out / subset).glob("*/*/*.trans.txt")) for line in trans.open()]
        utt_ids = [line.split(maxsplit=1)[0] for line in lines]
        words = {word for line in lines for word in line.split()[1:]}
        speakers = {utt_id.split("-")[0] for utt_id in utt_ids}
        seconds = sum(soundfile.info(str(path)).duration for path in (out / subset).glob(f"*/*/*{AUDIO_SUFFIX}"))
        rows.append(f"{subset:<16} {len(utt_ids):>10} {len(speakers):>8} {seconds / 3600:>7.3f} {len(words):>6}")
    return "\n".join(rows)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="corpus root (LibriSpeech-style)")
    parser.add_argument("--num_train", type=positive_int, default=5000, help="train utterances")
    parser.add_argument("--num_dev", type=positive_int, default=300, help="dev utterances")
    parser.add_argument("--num_test", type=positive_int, default=300, help="test utterances")
    parser.add_argument("--num_unlab", type=nonnegative_int, default=0, help="unlabeled (pre-training) utterances")
    parser.add_argument("--num_dev_other", type=nonnegative_int, default=0, help="dev utterances, other conditions")
    parser.add_argument("--num_test_other", type=nonnegative_int, default=0, help="test utterances, other conditions")
    parser.add_argument("--train_subset", default="train-synth", help="train subset directory name")
    parser.add_argument("--dev_subset", default="dev-synth", help="dev subset directory name")
    parser.add_argument("--test_subset", default="test-synth", help="test subset directory name")
    parser.add_argument("--unlab_subset", default="train-unlab-synth", help="unlabeled subset directory name")
    parser.add_argument("--dev_other_subset", default="dev-other-synth", help="dev subset name, other conditions")
    parser.add_argument("--test_other_subset", default="test-other-synth", help="test subset name, other conditions")
    parser.add_argument("--num_dev_speakers", type=positive_int, default=10, help="speakers held out for dev")
    parser.add_argument("--num_test_speakers", type=positive_int, default=10, help="speakers held out for test")
    parser.add_argument("--vocab_size", type=positive_int, default=3000, help="keep phrases of the N commonest words")
    parser.add_argument("--voices", default=DEFAULT_VOICES, help="comma-separated espeak-ng voices")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated espeak-ng variants")
    parser.add_argument(
        "--other_variants", default=DEFAULT_OTHER_VARIANTS,
        help="comma-separated espeak-ng variants of the other-condition speakers (half dev, half test)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the corpus is a function of the seed")
    parser.add_argument("--wordnet_dir", type=Path, default=Path("/usr/share/wordnet"), help="WordNet data files")
    parser.add_argument("--nj", type=positive_int, default=2, help="parallel espeak-ng processes")
    return parser


def build_plan(args: argparse.Namespace) -> tuple[list[str], list[Utterance]]:
    """The vocabulary and every utterance of every subset, decided from the options alone."""
    rng = random.Random(args.seed)
    all_phrases = read_phrases(args.wordnet_dir)
    vocab, phrases = restrict_vocabulary(all_phrases, args.vocab_size)
    logging.info("%d of %d phrases use only the %d most frequent words", len(phrases), len(all_phrases), len(vocab))
    held_out = args.num_dev + args.num_test + args.num_dev_other + args.num_test_other
    if held_out >= len(phrases):
        raise CorpusError(
            f"--num_dev + --num_test (+ --num_dev_other + --num_test_other) = {held_out}, "
            f"but only {len(phrases)} phrases: raise --vocab_size"
        )
    if args.num_train > len(phrases) - held_out:
        logging.warning("only %d train phrases: some are read by several speakers", len(phrases) - held_out)

    speakers = make_speakers(args.voices.split(","), args.variants.split(","), rng)
    held_out_speakers = args.num_dev_speakers + args.num_test_speakers
    if held_out_speakers >= len(speakers):
        raise CorpusError(f"{held_out_speakers} dev + test speakers leave none of {len(speakers)} for train")
    rng.shuffle(phrases)
    rng.shuffle(speakers)

    dev_speakers, test_speakers = speakers[: args.num_dev_speakers], speakers[args.num_dev_speakers : held_out_speakers]
    train_speakers = speakers[held_out_speakers:]
    cuts = list(itertools.accumulate([args.num_dev, args.num_test, args.num_dev_other, args.num_test_other], initial=0))
    train_phrases = phrases[held_out:]
    splits = [  # (subset, utterances, phrases, speakers)
        (args.dev_subset, args.num_dev, phrases[cuts[0] : cuts[1]], dev_speakers),
        (args.test_subset, args.num_test, phrases[cuts[1] : cuts[2]], test_speakers),
        (args.train_subset, args.num_train, train_phrases, train_speakers),
    ]
    if args.num_unlab:  # the training phrases from where train stopped: other speaker-phrase pairs
        start = args.num_train % len(train_phrases)
        splits.append((args.unlab_subset, args.num_unlab, train_phrases[start:] + train_phrases[:start], train_speakers))
    other_subsets = []
    if args.num_dev_other or args.num_test_other:
        other_speakers = make_speakers(args.voices.split(","), args.other_variants.split(","), rng,
                                       FIRST_SPEAKER_ID + len(speakers), OTHER_RATE_WPM)
        if len(other_speakers) < 2:
            raise CorpusError("--other_variants: at least two other-condition speakers are needed (dev and test)")
        rng.shuffle(other_speakers)
        half = len(other_speakers) // 2
        for subset, num_utts, subset_phrases, subset_speakers in (
            (args.dev_other_subset, args.num_dev_other, phrases[cuts[2] : cuts[3]], other_speakers[:half]),
            (args.test_other_subset, args.num_test_other, phrases[cuts[3] : cuts[4]], other_speakers[half:]),
        ):
            if num_utts:
                splits.append((subset, num_utts, subset_phrases, subset_speakers))
                other_subsets.append(subset)
    utterances: list[Utterance] = []
    for subset, num_utts, subset_phrases, subset_speakers in splits:
        first_chapter = 1 + len({utt.chapter_dir for utt in utterances})
        planned = plan_subset(args.out / subset, num_utts, subset_phrases, subset_speakers, first_chapter)
        utterances += add_noise(planned, rng) if subset in other_subsets else planned
    return vocab, utterances


def write_speakers(path: Path, utterances: list[Utterance]) -> None:
    """SPEAKERS.TXT: which espeak-ng voice each speaker id is."""
    subset_of: dict[Speaker, str] = {}
    for utt in utterances:  # a training speaker is listed under train, not under the unlabeled subset
        subset_of.setdefault(utt.speaker, utt.chapter_dir.parents[1].name)
    lines = [";ID  |SEX| SUBSET           | VOICE\n"]
    for speaker in sorted(subset_of, key=lambda speaker: speaker.speaker_id):
        lines.append(f"{speaker.speaker_id:<5}| {speaker.sex} | {subset_of[speaker]:<17}| {speaker.describe()}\n")
    write_text_atomic(path, "".join(lines))


def main() -> None:
    args = get_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (synthesize_corpus) %(levelname)s: %(message)s")
    settings = {key: str(value) for key, value in sorted(vars(args).items()) if key not in ("out", "nj", "wordnet_dir")}
    settings_path, done = args.out / "synthesis.json", args.out / ".done"
    subsets = [args.train_subset, args.dev_subset, args.test_subset]
    optional = ((args.num_unlab, args.unlab_subset), (args.num_dev_other, args.dev_other_subset),
                (args.num_test_other, args.test_other_subset))
    subsets += [subset for num, subset in optional if num]
    try:
        for tool in ("espeak-ng", "sox"):
            if shutil.which(tool) is None:
                raise CorpusError(f"{tool} not found: apt-get install espeak-ng sox")
        if len(set(subsets)) < len(subsets):
            raise CorpusError("the subset names (--train_subset, --dev_subset, --test_subset, ...) must differ")
        if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
            raise CorpusError(f"{args.out} was synthesized with other options (see {settings_path}); use another --out")
        if done.exists():
            logging.info("%s exists: corpus already complete", done)
        else:
            vocab, utterances = build_plan(args)
            write_text_atomic(settings_path, json.dumps(settings, indent=2) + "\n")
            write_text_atomic(args.out / "vocab.txt", "".join(f"{word}\n" for word in vocab))
            write_speakers(args.out / "SPEAKERS.TXT", utterances)
            synthesize_all(utterances, args.nj)
            write_transcripts(utterances)
            write_text_atomic(done, "")
    except (CorpusError, OSError) as error:
        logging.error("%s", error)
        sys.exit(1)
    print(summarize(args.out, subsets))


if __name__ == "__main__":
    main()
