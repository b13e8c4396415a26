# Config set "smoke" (tests/test_recipe.py): every stage, pre-training included, on a
# ~40-utterance corpus with a tiny model and one epoch per training run; a couple of
# minutes. Not a usable model.
num_train=16
num_unlab=8
num_dev=4
num_dev_other=4
num_test=6
num_test_other=4
vocab_size=3000
test_subsets="$test_clean"               # decode one test set only
upstream_preset=tiny
upstream_args="--num_layers 1"
num_clusters=8
kmeans_utts=24
pretrain_overrides="max_epoch=1 batch_size=4"
train_overrides="max_epoch=1 batch_size=4 encoder_conf.output_size=32 encoder_conf.linear_units=64"
fp32_overrides=""                        # ... for the 32-bit training (stage 8) only
use_lm=true                              # the LM path too (stages 7-9, 11): a tiny LM on 300 lines
lm_max_lines=300
lm_overrides="max_epoch=1 batch_size=8 lm_conf.unit=16"
decode_lm_config=conf/decode_asr_lm_beam16.yaml  # 28 characters here: narrower than the default beam of 30
