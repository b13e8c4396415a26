# Config set "gpu": a GPU-scaled 32-bit reference, sized for a few minutes of one H100/H200
# (bench/device_run.sh reference runs it there): a 6-layer x 384 upstream with the
# 256-channel extractor (about 12 M parameters), pre-trained on 12,000 utterances (6,000
# labeled + 6,000 unlabeled) and fine-tuned on the 6,000, test sets of 1,000 each.
#   ./run.sh --config_set gpu --ngpu 1 --nj 16 --stop_stage 9
# Synthesis, data preparation, k-means units and decoding run on the CPU (--nj jobs).
work=gpu
num_train=6000
num_unlab=6000
num_dev=200
num_dev_other=200
num_test=1000
num_test_other=1000
vocab_size=8000                          # as reference.sh: enough phrases for 6,000 + 2,400 held out
test_subsets="$test_clean $test_other"
upstream_preset=small
upstream_args="--embed_dim 384 --ffn_dim 1536 --num_layers 6 --heads 6 --pos_conv_groups 16 --conv_channels 256"
num_clusters=100
kmeans_utts=3000
pretrain_overrides="max_epoch=6 batch_size=64 num_workers=6"
train_overrides="batch_size=32 num_workers=6"
fp32_overrides="max_epoch=12"         # 12 epochs: about 3 minutes on an H200 (RESULTS.md, 2026-11-27)
