# Config set "bench" (local/benchmark.py): the paper's comparison, every system of
# conf/tuning/bench/ from one 32-bit model, sized for 2 CPU cores: the default corpus,
# upstream and pre-training, a 32-bit model trained five times as long (30 epochs), each
# compression stage 2 epochs (set in conf/tuning/bench/), and decoding of test-clean only.
# (The full-size 32-bit reference, test sets of 1,000 utterances each, is conf/sets/reference.sh.)
# On a GPU, scale it from the command line (the options override this file), e.g.
#   python local/benchmark.py --ngpu 1 --num_train 6000 --fp32_overrides "max_epoch=60"
# Its own working directory, so that it never mixes with the default run's exp/.
work=bench
num_train=2000
num_unlab=4000
num_dev=150
num_dev_other=150
num_test=200
num_test_other=200
vocab_size=3000
test_subsets="$test_clean"               # a role, not a subset name: test-synth, or LibriSpeech's test-clean
upstream_preset=tiny
upstream_args="--embed_dim 128 --ffn_dim 512 --num_layers 3 --heads 4 --pos_conv_groups 8"
num_clusters=100
kmeans_utts=2000
pretrain_overrides="max_epoch=2"
train_overrides=""                       # compose_config --set items for every training config
fp32_overrides="max_epoch=30"            # ... for the 32-bit training (stage 8) only
