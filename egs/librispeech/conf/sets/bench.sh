# Config set "bench" (local/benchmark.py): the paper's comparison, every system of
# conf/tuning/bench/ compressed from one 32-bit model, the full-size reference: this set IS
# conf/sets/reference.sh (its sizes and its working directory, so a reference already built
# with `./run.sh --config_set reference --stop_stage 9` is reused, not trained again), with
# test-clean and test-other decoded and scored for every system (lossless must hold on both).
# Budget on 2 CPU cores (an estimate from the default set's measured speeds at 94f3332, NOT
# measured on this set: compression about 50 s per 1,000 utterances and epoch, distillation
# included; decoding 0.04 s per utterance and job): per joint or uniform system (2 epochs on
# 6,000 utterances) about 12 min with its decoding of 2 x 1,000 utterances, two_stage about
# 17 min, ptq about 3 min; the reference 1.9 h (measured), then the 27 systems about 5-6 h (v3 measured 4.0 h with the C kernel). Every
# system resumes where it stopped; run it in pieces with local/benchmark.py --systems.
# Decoding: reference.sh turns the LM on (use_lm=true), so every system is decoded with the
# reference's LM, beam 30: about 0.25 s per utterance and job at beam 30 on the faster of
# the machines measured, 0.19 s at beam 16 (the reference's test sets, 2026-11-27: 125-128 s
# against 93 s per 1,000 utterances with 2 jobs); on the slower one beam 16 took about 0.5 s,
# 17 min per system for 2 x 1,000 utterances, which roughly doubled the budget above. Benchmark v2 (results/) was decoded without an LM (best
# path); `local/benchmark.py --use_lm false` decodes that way again.
. conf/sets/reference.sh
test_subsets="$test_clean $test_other"   # roles, not subset names: run.sh maps them to the corpus
