# Config set "default" (./run.sh): the built-in corpus sized so that stages 1-13 run in
# about 20 minutes on 2 CPU cores. Variables read by run.sh; options on the command line win.
num_train=2000     # built-in corpus: utterances synthesized per subset
num_dev=150
num_test=200
upstream_preset=tiny                     # espnet_mpq.bin.build_upstream --preset
upstream_args="--embed_dim 128 --ffn_dim 512 --num_layers 3 --heads 4 --pos_conv_groups 8"
train_overrides=""                       # compose_config --set items for every training config
fp32_overrides=""                        # ... for the 32-bit training (stage 8) only
