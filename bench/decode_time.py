"""Decoding time of a packed (and a parametrized) model against the 32-bit model, side by side.

Usage:
    .venv/bin/python bench/decode_time.py --wav_scp data/test_clean/wav.scp \
        --fp32 exp/asr_fp32/config.yaml exp/asr_fp32/valid.loss.ave.pth \
        --packed exp/asr_joint/config.yaml exp/asr_joint/model.mpq \
        --parametrized exp/asr_joint/config.yaml exp/asr_joint/valid.loss.ave.pth

Builds each system's Speech2Text once, the way ``espnet_mpq.bin.asr_inference`` does
(quantized layers stripped to W_eff after loading), plus ``parametrized/unstripped``, the
same checkpoint left in its training parametrization (W_eff recomputed every forward, as
before issue 10). Then decodes every utterance of the list with each system in turn
(batch 1; CTC best path as the recipe's conf/decode_asr.yaml, or ESPnet's prefix beam
search of width 1 with ``--search beam``), ``--repeats`` rounds round-robin, and reports
the median time of a pass over the set; model loading is not timed. The beam search's
cost grows with the hypothesis length, which differs between the systems' hypotheses;
best path costs the same for the same audio. The last line is machine-readable:

    decode_time_ratio packed/fp32 = X.XX
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import soundfile
import torch


def load_wavs(wav_scp: str) -> list:
    wavs = []
    with open(wav_scp) as f:
        for line in f:
            _, path = line.split(maxsplit=1)
            wavs.append(torch.tensor(soundfile.read(path.strip(), dtype="float32")[0]))
    return wavs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wav_scp", required=True)
    parser.add_argument("--fp32", nargs=2, required=True, metavar=("CONFIG", "MODEL"))
    parser.add_argument("--packed", nargs=2, required=True, metavar=("CONFIG", "MODEL"))
    parser.add_argument("--parametrized", nargs=2, metavar=("CONFIG", "MODEL"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--search", choices=("greedy", "beam"), default="greedy",
                        help="CTC best path (the recipe's decoding) or ESPnet's prefix beam search, width 1")
    args = parser.parse_args()

    from espnet_mpq.register import register

    register()
    import espnet2.bin.asr_inference as inference

    from espnet_mpq.asr.ctc_greedy import GreedyCTCSpeech2Text
    from espnet_mpq.asr.task import MpqASRTask
    from espnet_mpq.bin.asr_inference import decoding_task

    speech2text = GreedyCTCSpeech2Text if args.search == "greedy" else inference.Speech2Text

    systems = {"fp32": (args.fp32, decoding_task()), "packed": (args.packed, decoding_task())}
    if args.parametrized:
        systems["parametrized"] = (args.parametrized, decoding_task())
        systems["parametrized/unstripped"] = (args.parametrized, MpqASRTask)
    decoders = {}
    for name, ((config, model), task) in systems.items():
        inference.ASRTask = task
        decoders[name] = speech2text(asr_train_config=config, asr_model_file=model, device="cpu",
                                    batch_size=1, beam_size=1, ctc_weight=1.0, lm_weight=0.0,
                                    nbest=1)
    wavs = load_wavs(args.wav_scp)
    hyps = {name: [] for name in decoders}
    times = {name: [] for name in decoders}
    for r in range(args.repeats + 1):  # the first round warms up
        for name, decoder in decoders.items():
            start = time.perf_counter()
            texts = [decoder(w)[0][0] for w in wavs]
            if r:
                times[name].append(time.perf_counter() - start)
            hyps[name] = texts
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"search {args.search}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; "
          f"{len(wavs)} utterances ({sum(len(w) for w in wavs) / 16000:.1f} s), median of {args.repeats} passes")
    for name in decoders:
        same = "same hypotheses as packed" if hyps[name] == hyps["packed"] else "hypotheses differ from packed"
        print(f"{name:<24} {median[name]:8.3f} s  ratio {median[name] / median['fp32']:.3f}  ({same})")
    print(f"decode_time_ratio packed/fp32 = {median['packed'] / median['fp32']:.2f}")


if __name__ == "__main__":
    main()
