# Config set "bench" (local/benchmark.py): the paper's comparison, every system of
# conf/tuning/bench/ compressed from one 32-bit model, the full-size reference: this set IS
# conf/sets/reference.sh (its sizes and its working directory, so a reference already built
# with `./run.sh --config_set reference --stop_stage 9` is reused, not trained again), with
# test-clean and test-other decoded and scored for every system (lossless must hold on both).
# Budget on 2 CPU cores (an estimate, NOT measured: per system 2 epochs of compression,
# 1.8-3.2x a 32-bit step, on 6,000 utterances, about 15-25 min, two_stage's 3 epochs about
# 25-35 min, decoding 2 x 1,000 utterances about 15 min): the reference about 2.2 h, then
# 25 systems about 12-16 h. Every system resumes where it stopped; run it in pieces with
# local/benchmark.py --systems.
. conf/sets/reference.sh
test_subsets="$test_clean $test_other"   # roles, not subset names: run.sh maps them to the corpus
