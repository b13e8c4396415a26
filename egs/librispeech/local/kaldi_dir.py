#!/usr/bin/env python3
"""Format, filter and speed-perturb Kaldi data directories; write ESPnet's shape files.

Usage:
    python local/kaldi_dir.py format --src data/train_synth --dst dump/raw/train_synth
    python local/kaldi_dir.py filter --src dump/raw/train_synth --dst dump/raw/train_synth_filt \\
        --min_sec 0.5 --max_sec 20 --max_chars 400
    python local/kaldi_dir.py perturb --src dump/raw/train_synth_filt --dst dump/raw/train_synth_sp \\
        --factors 0.9 1.0 1.1 --audio_dir dump/audio/train_synth_sp
    python local/kaldi_dir.py shapes --src dump/raw/train_synth_filt dump/raw/dev_synth_filt --token_type char \\
        [--bpemodel data/token_list/bpe/bpe.model]

format   checks a directory made by local/prepare_data.py (wav.scp, text, utt2spk,
         spk2utt: the same utterance ids, sorted in C order) and copies it with
         utt2num_samples (`<uttid> <samples>`, read from the audio headers).
format, filter, perturb write every file of --dst atomically and then --dst/.done.
filter   keeps the utterances with min_sec <= duration <= max_sec and a transcript
         of at most max_chars characters, and says how many it dropped.
perturb  adds, for each factor f != 1, a copy of every utterance resampled by 1/f
         (tempo and pitch change together, like `sox speed f`), ids prefixed `sp{f}-`.
shapes   writes speech_shape (samples) and text_shape (tokens of --token_type) for
         ESPnet's --*_shape_file: what `asr_train --collect_stats` would write for
         these two keys (the model normalises per utterance: no global statistics).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from fractions import Fraction
from pathlib import Path

import soundfile

KALDI_FILES = ("wav.scp", "text", "utt2spk")
SAMPLE_RATE = 16000


def read_table(path: Path) -> dict[str, str]:
    """`<key> <value...>` lines -> {key: value} (value may be empty)."""
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            table[key] = value.strip()
    return table


def write_table_atomic(path: Path, table: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{k} {v}\n" for k, v in sorted(table.items())), encoding="utf-8")
    os.replace(tmp, path)


def spk2utt(utt2spk: dict[str, str]) -> dict[str, str]:
    speakers: dict[str, list[str]] = {}
    for utt, spk in sorted(utt2spk.items()):
        speakers.setdefault(spk, []).append(utt)
    return {spk: " ".join(utts) for spk, utts in speakers.items()}


def read_dir(src: Path) -> dict[str, dict[str, str]]:
    """The Kaldi files of ``src``; exits with a message if one is missing or the ids differ."""
    missing = [name for name in KALDI_FILES if not (src / name).is_file()]
    if missing:
        sys.exit(f"kaldi_dir: {src} is not a Kaldi data directory: no {', '.join(missing)}")
    tables = {name: read_table(src / name) for name in KALDI_FILES}
    ids = set(tables["wav.scp"])
    for name, table in tables.items():
        if set(table) != ids:
            sys.exit(f"kaldi_dir: {src}/{name} and {src}/wav.scp list different utterances")
    empty = [utt for utt, text in tables["text"].items() if not text]
    if empty:
        sys.exit(f"kaldi_dir: {src}/text has empty transcripts: {', '.join(empty[:5])}")
    if (src / "utt2num_samples").is_file():
        tables["utt2num_samples"] = read_table(src / "utt2num_samples")
    return tables


def write_dir(dst: Path, tables: dict[str, dict[str, str]]) -> None:
    (dst / ".done").unlink(missing_ok=True)
    for name, table in tables.items():
        write_table_atomic(dst / name, table)
    write_table_atomic(dst / "spk2utt", spk2utt(tables["utt2spk"]))
    (dst / ".done").touch()
    logging.info("wrote %s: %d utterances", dst, len(tables["wav.scp"]))


def cmd_format(args) -> None:
    tables = read_dir(args.src)
    tables["utt2num_samples"] = {utt: str(soundfile.info(path).frames) for utt, path in tables["wav.scp"].items()}
    write_dir(args.dst, tables)


def cmd_filter(args) -> None:
    tables = read_dir(args.src)
    if "utt2num_samples" not in tables:
        sys.exit(f"kaldi_dir: {args.src} has no utt2num_samples: run `kaldi_dir.py format` first")
    keep = {
        utt for utt, n in tables["utt2num_samples"].items()
        if args.min_sec * SAMPLE_RATE <= int(n) <= args.max_sec * SAMPLE_RATE
        and len(tables["text"][utt]) <= args.max_chars
    }
    if not keep:
        sys.exit(f"kaldi_dir: no utterance of {args.src} passes the length filter")
    logging.info("filter %s: kept %d, dropped %d (duration outside [%g, %g] s or more than %d characters)",
                 args.src, len(keep), len(tables["wav.scp"]) - len(keep), args.min_sec, args.max_sec, args.max_chars)
    write_dir(args.dst, {name: {u: v for u, v in t.items() if u in keep} for name, t in tables.items()})


def cmd_perturb(args) -> None:
    from scipy.signal import resample_poly

    tables = read_dir(args.src)
    out = {name: dict(table) for name, table in tables.items()}
    for factor in args.factors:
        if factor == 1.0:
            continue
        ratio = Fraction(1 / factor).limit_denominator(100)  # new length = old length / factor
        for utt, path in tables["wav.scp"].items():
            new = f"sp{factor:g}-{utt}"
            target = (args.audio_dir / f"{new}.flac").resolve()
            if not target.is_file():
                audio, rate = soundfile.read(path, dtype="float32")
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp.flac")
                soundfile.write(tmp, resample_poly(audio, ratio.numerator, ratio.denominator), rate)
                os.replace(tmp, target)
            out["wav.scp"][new] = str(target)
            out["text"][new] = tables["text"][utt]
            out["utt2spk"][new] = f"sp{factor:g}-{tables['utt2spk'][utt]}"
            out["utt2num_samples"][new] = str(soundfile.info(target).frames)
    write_dir(args.dst, out)


def cmd_shapes(args) -> None:
    from espnet_mpq.register import quiet_nltk_downloads

    with quiet_nltk_downloads():  # ESPnet's tokenizers import g2p_en, which tries nltk downloads
        from espnet2.text.build_tokenizer import build_tokenizer

    tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=args.bpemodel)
    for src in args.src:
        tables = read_dir(src)
        write_table_atomic(src / "speech_shape", tables["utt2num_samples"])
        write_table_atomic(src / "text_shape", {u: str(len(tokenizer.text2tokens(t))) for u, t in tables["text"].items()})
        logging.info("wrote %s/speech_shape, text_shape (%s tokens)", src, args.token_type)


def get_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in [("format", cmd_format), ("filter", cmd_filter), ("perturb", cmd_perturb), ("shapes", cmd_shapes)]:
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        if name == "shapes":
            p.add_argument("--src", type=Path, nargs="+", required=True, help="Kaldi data directories")
        else:
            p.add_argument("--src", type=Path, required=True, help="Kaldi data directory to read")
            p.add_argument("--dst", type=Path, required=True, help="Kaldi data directory to write")
    f = sub.choices["filter"]
    f.add_argument("--min_sec", type=float, default=0.5)
    f.add_argument("--max_sec", type=float, default=20.0)
    f.add_argument("--max_chars", type=int, default=400)
    p = sub.choices["perturb"]
    p.add_argument("--factors", type=float, nargs="+", required=True, help="speed factors, e.g. 0.9 1.0 1.1")
    p.add_argument("--audio_dir", type=Path, required=True, help="where the perturbed FLAC files go")
    s = sub.choices["shapes"]
    s.add_argument("--token_type", choices=["char", "bpe"], default="char")
    s.add_argument("--bpemodel", default=None, help="sentencepiece model (token_type bpe)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_args()
    args.func(args)
