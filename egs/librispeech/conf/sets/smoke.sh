# Config set "smoke" (tests/test_recipe.py): every stage on a ~20-utterance corpus with
# a tiny model and one epoch per training run; a couple of minutes. Not a usable model.
num_train=16
num_dev=4
num_test=6
upstream_preset=tiny
upstream_args="--num_layers 1"
train_overrides="max_epoch=1 batch_size=4 encoder_conf.output_size=32 encoder_conf.linear_units=64"
fp32_overrides=""                        # ... for the 32-bit training (stage 8) only
test_subsets="test-synth"                # decode one test set only
