"""CTC best-path (greedy) decoding inside ESPnet's Speech2Text.

ESPnet's search with ``ctc_weight: 1.0`` and ``beam_size: 1`` is a CTC *prefix* beam
search: every output token re-runs the prefix scorer over all T frames, O(T x L) in a
Python loop (about 1 s per 3 s utterance on a CPU core). Best path is O(T):

    y = collapse(argmax_v log p(v | x_t), t = 1..T)     collapse: merge repeats, drop blank (and <sos/eos>)

It is the usual decoding of CTC-only models without a language model. It is not the
same search as a prefix beam of width 1 (which sums over alignments); hypotheses may
differ in a few tokens.
"""
from __future__ import annotations

from itertools import groupby
from typing import Collection, Sequence

import torch

from espnet.nets.beam_search import Hypothesis
from espnet2.bin.asr_inference import Speech2Text

__all__ = ["GreedyCTCSpeech2Text", "ctc_best_path", "check_greedy_options"]


def ctc_best_path(frame_ids: Sequence[int], blank: int, drop: Collection[int] = ()) -> list[int]:
    """Collapse a frame-level argmax path: merge runs of one id, then drop ``blank`` and ``drop``."""
    return [token for token, _ in groupby(frame_ids) if token != blank and token not in drop]


def check_greedy_options(options: dict) -> None:
    """Refuse the ``espnet2.bin.asr_inference`` options that best-path decoding would ignore."""
    given = [name for name in ("lm_train_config", "lm_file", "word_lm_train_config", "word_lm_file",
                               "ngram_file") if options.get(name)]
    if given:
        raise ValueError(f"ctc_greedy decodes without a language model; {', '.join(given)} given. "
                         "Drop them, or set ctc_greedy false for ESPnet's beam search.")
    if options.get("ctc_weight") != 1.0:
        raise ValueError(f"ctc_greedy decodes with the CTC head alone, but ctc_weight is "
                         f"{options.get('ctc_weight')}; set ctc_weight 1.0, or ctc_greedy false.")
    if options.get("nbest", 1) != 1:
        raise ValueError(f"ctc_greedy gives one hypothesis; nbest is {options['nbest']}, allowed: 1.")
    for name in ("multi_asr", "streaming", "time_sync", "partial_ar"):
        if options.get(name):
            raise ValueError(f"ctc_greedy does not combine with {name}; set ctc_greedy false.")


class GreedyCTCSpeech2Text(Speech2Text):
    """Speech2Text whose search is CTC best path (``ctc_best_path``); output format unchanged.

    The hypothesis's score is sum_t max_v log p(v | x_t), the log-probability of the best
    alignment (ESPnet's writes the prefix probability there).
    """

    def _decode_single_sample(self, enc: torch.Tensor):
        model = self.asr_model
        if model.ctc is None:
            raise ValueError("ctc_greedy needs a model with a CTC head; this one has none (ctc_weight 0 "
                             "in training). Set ctc_greedy false.")
        log_probs = model.ctc.log_softmax(enc.unsqueeze(0))[0]  # (T, V)
        best = log_probs.max(dim=-1)
        # <sos/eos> is in the CTC vocabulary but never a target: dropped, as ESPnet's inter-CTC greedy does
        token_int = ctc_best_path(best.indices.tolist(), blank=model.blank_id, drop=(model.sos, model.eos))
        score = best.values.sum()
        hyp = Hypothesis(yseq=torch.tensor([model.sos, *token_int, model.eos]), score=score,
                         scores={"ctc": score}, states={})
        token = self.converter.ids2tokens(token_int)
        text = self.tokenizer.tokens2text(token) if self.tokenizer is not None else None
        return [(text, token, token_int, hyp)]
