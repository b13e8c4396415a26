# Config set "default" (./run.sh): the built-in corpus and a tiny HuBERT, every stage (HuBERT
# pre-training included). Measured on 2 idle CPU cores, 2026-11-26 (code 94f3332): 21 minutes
# for stages 1-13 (synthesis 99 s, k-means + pre-training 306 s, 32-bit training 410 s, its
# decoding 26 s, compression 323 s, its decoding 28 s, export 43 s; results/make_recipe_default.log).
# The extractor has 32 channels (the preset's 64 made every training step 1.5x slower, for no
# better model: valid CER 0.352 against 0.339 after 6 epochs, one run each). Variables read by run.sh;
# options on the command line win.
# Subset roles ($test_clean, $test_other, ...) are set by run.sh for the corpus in use.
num_train=2000       # built-in corpus: labeled training utterances (fine-tuning)
num_unlab=4000       # ... unlabeled utterances of the training speakers (pre-training only)
num_dev=150          # ... dev (clean; validation during training), dev-other
num_dev_other=150
num_test=200         # ... test-clean, test-other (unseen voices and rates, 10-20 dB noise)
num_test_other=200
vocab_size=3000      # ... phrases use only the N commonest words of WordNet's examples
test_subsets="$test_clean $test_other"   # decoded and scored (stages 9, 11, 12)
upstream_preset=tiny                     # espnet_mpq.bin.build_upstream --preset
upstream_args="--embed_dim 128 --ffn_dim 512 --num_layers 3 --heads 4 --pos_conv_groups 8 --conv_channels 32"
num_clusters=100                         # HuBERT iteration 0: k-means units of MFCCs
kmeans_utts=2000                         # k-means fitted on this many utterances
pretrain_overrides="max_epoch=1"         # compose_config --set items for the pre-training (stage 6)
train_overrides=""                       # compose_config --set items for every ASR training config
fp32_overrides=""                        # ... for the 32-bit training (stage 8) only
