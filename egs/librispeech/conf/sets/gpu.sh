# Config set "gpu": a GPU-scaled 32-bit reference (one H100, a few minutes of training):
# a 6-layer x 384 upstream with the 256-channel extractor (about 12 M parameters),
# pre-trained on 30,000 utterances and fine-tuned on 10,000, test sets of 1,000 each.
#   ./run.sh --config_set gpu --ngpu 1 --nj 8 --stop_stage 9
# NOT run yet (no GPU in the session that wrote it); synthesis (about 5 min with --nj 8)
# and decoding run on the CPU.
work=gpu
num_train=10000
num_unlab=20000
num_dev=300
num_dev_other=300
num_test=1000
num_test_other=1000
vocab_size=12000
test_subsets="$test_clean $test_other"
upstream_preset=small
upstream_args="--embed_dim 384 --ffn_dim 1536 --num_layers 6 --heads 6 --pos_conv_groups 16 --conv_channels 256"
num_clusters=100
kmeans_utts=5000
pretrain_overrides="max_epoch=10 batch_size=64"
train_overrides="batch_size=32"
fp32_overrides="max_epoch=30"
