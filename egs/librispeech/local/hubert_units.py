#!/usr/bin/env python3
"""Targets of HuBERT pre-training: k-means units of MFCC features, one per 20 ms model frame.

Usage:
    python local/hubert_units.py learn --wav_scp data/train_synth/wav.scp data/train_unlab_synth/wav.scp \\
        --num_clusters 100 --max_utts 2000 --output exp/upstream/kmeans/km.pkl
    python local/hubert_units.py dump --wav_scp data/train_synth/wav.scp data/train_unlab_synth/wav.scp \\
        --kmeans exp/upstream/kmeans/km.pkl --out_dir dump/pretrain/train
    python local/hubert_units.py dump --wav_scp data/dev_synth/wav.scp --kmeans exp/upstream/kmeans/km.pkl \\
        --out_dir dump/pretrain/valid

HuBERT's iteration 0 (Hsu et al. 2021; fairseq examples/hubert/simple_kmeans, which
ESPnet's egs2 ssl1 recipes follow): 13 Kaldi MFCCs (no energy) with their first and
second deltas (39 dims), clustered with scikit-learn's MiniBatchKMeans; each frame's
label is its nearest centroid. Here the MFCC window is 25 ms with a 20 ms shift and
Kaldi's snip_edges, which gives exactly one label per output frame of the HuBERT conv
extractor (receptive field 400 samples, stride 320: 1 + (samples - 400) // 320 frames),
so the labels need no resampling.

``learn`` fits the k-means model on at most --max_utts utterances (a random sample,
--seed) of the given wav.scp files and writes it with pickle. ``dump`` writes, for the
utterances of the wav.scp files (in C order of their ids):

    wav.scp       the audio (copied lines)
    text          `<uttid> <unit> <unit> ...`   (ESPnet's HuBERT task reads it as word tokens)
    speech_shape  `<uttid> <samples>`
    text_shape    `<uttid> <frames>`
    tokens.txt    the token list: unit ids 0..K-1, then <unk> (token id = unit id)

Utterances shorter than one frame (400 samples) are left out, with a count in the log.
Every file is written under a temporary name and renamed; the directory is complete
when `.done` exists. The features are recomputed by each command (MFCCs cost about
1 ms per second of audio), so nothing large is stored.
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch

SAMPLE_RATE = 16000
FRAME_LENGTH_MS = 25.0  # Kaldi's window; with snip_edges: frames = 1 + (samples - 400) // 320
FRAME_SHIFT_MS = 20.0  # = the HuBERT conv extractor's stride (320 samples)
MIN_SAMPLES = 400
NUM_CEPS = 13
UNK = "<unk>"


def read_wav_scp(paths: list[Path]) -> dict[str, str]:
    """{uttid: audio path} of Kaldi wav.scp files (plain paths; no pipes), later files win on repeats."""
    table = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                utt_id, audio = line.split(maxsplit=1)
                table[utt_id] = audio
    return table


def mfcc_features(audio: str) -> np.ndarray:
    """MFCC + delta + delta-delta, (frames, 39), one frame per 20 ms with snip_edges."""
    import torchaudio

    wav, rate = soundfile.read(audio, dtype="float32")
    if rate != SAMPLE_RATE or wav.ndim != 1:
        raise ValueError(f"{audio}: expected 16 kHz mono audio, got {rate} Hz, shape {wav.shape}")
    with torch.no_grad():
        mfcc = torchaudio.compliance.kaldi.mfcc(
            torch.from_numpy(wav).unsqueeze(0) * 32768,  # Kaldi's 16-bit scale, as fairseq's dump_mfcc_feature
            sample_frequency=SAMPLE_RATE, frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS,
            num_ceps=NUM_CEPS, use_energy=False, snip_edges=True, dither=0.0,
        )  # (frames, 13)
        mfcc_t = mfcc.transpose(0, 1)  # (13, frames)
        delta = torchaudio.functional.compute_deltas(mfcc_t)
        delta2 = torchaudio.functional.compute_deltas(delta)
        return torch.cat([mfcc_t, delta, delta2], dim=0).transpose(0, 1).numpy()  # (frames, 39)


def num_frames(samples: int) -> int:
    return 1 + (samples - MIN_SAMPLES) // (SAMPLE_RATE * int(FRAME_SHIFT_MS) // 1000)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def learn(args: argparse.Namespace) -> None:
    from sklearn.cluster import MiniBatchKMeans

    table = read_wav_scp(args.wav_scp)
    utt_ids = sorted(table)
    random.Random(args.seed).shuffle(utt_ids)
    utt_ids = utt_ids[: args.max_utts]
    feats = [mfcc_features(table[u]) for u in utt_ids if soundfile.info(table[u]).frames >= MIN_SAMPLES]
    data = np.concatenate(feats)  # (frames, 39)
    logging.info("k-means with %d clusters on %d frames of %d utterances", args.num_clusters, len(data), len(feats))
    if len(data) < args.num_clusters:
        raise SystemExit(f"only {len(data)} frames for {args.num_clusters} clusters: give more audio")
    # fairseq's learn_kmeans.py settings (k-means++ init, 20 inits, no reassignment).
    kmeans = MiniBatchKMeans(
        n_clusters=args.num_clusters, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
        max_no_improvement=100, n_init=20, reassignment_ratio=0.0, random_state=args.seed,
    ).fit(data)
    inertia = -kmeans.score(data) / len(data)
    logging.info("mean squared distance to the nearest centroid: %.2f", inertia)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(kmeans, f)
    os.replace(tmp, args.output)
    logging.info("wrote %s", args.output)


def dump(args: argparse.Namespace) -> None:
    with open(args.kmeans, "rb") as f:
        kmeans = pickle.load(f)
    table = read_wav_scp(args.wav_scp)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / ".done").unlink(missing_ok=True)
    lines = {name: [] for name in ("wav.scp", "text", "speech_shape", "text_shape")}
    skipped = 0
    for utt_id in sorted(table, key=str.encode):
        samples = soundfile.info(table[utt_id]).frames
        if samples < MIN_SAMPLES:
            skipped += 1
            continue
        units = kmeans.predict(mfcc_features(table[utt_id]).astype(kmeans.cluster_centers_.dtype))
        assert len(units) == num_frames(samples), (utt_id, len(units), num_frames(samples))
        lines["wav.scp"].append(f"{utt_id} {table[utt_id]}")
        lines["text"].append(f"{utt_id} {' '.join(map(str, units))}")
        lines["speech_shape"].append(f"{utt_id} {samples}")
        lines["text_shape"].append(f"{utt_id} {len(units)}")
    if not lines["text"]:
        raise SystemExit(f"no usable utterance in {', '.join(map(str, args.wav_scp))}")
    for name, rows in lines.items():
        write_atomic(out / name, "\n".join(rows) + "\n")
    tokens = [str(i) for i in range(kmeans.n_clusters)] + [UNK]
    write_atomic(out / "tokens.txt", "\n".join(tokens) + "\n")
    (out / ".done").touch()
    logging.info("%s: units of %d utterances (%d shorter than %d samples left out)", out, len(lines["text"]),
                 skipped, MIN_SAMPLES)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("learn", help="fit the k-means model")
    p.add_argument("--wav_scp", type=Path, nargs="+", required=True, help="Kaldi wav.scp files")
    p.add_argument("--num_clusters", type=int, default=100, help="k (HuBERT iteration 0: 100)")
    p.add_argument("--max_utts", type=int, default=2000, help="fit on a random sample of this many utterances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, required=True, help="k-means model (pickle)")
    p.set_defaults(func=learn)
    p = commands.add_parser("dump", help="write units, shapes and the token list")
    p.add_argument("--wav_scp", type=Path, nargs="+", required=True, help="Kaldi wav.scp files")
    p.add_argument("--kmeans", type=Path, required=True, help="model written by `learn`")
    p.add_argument("--out_dir", type=Path, required=True)
    p.set_defaults(func=dump)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (hubert_units) %(levelname)s: %(message)s")
    torch.set_num_threads(1)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
