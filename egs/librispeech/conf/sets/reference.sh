# Config set "reference": the full-size 32-bit reference that compressed models are judged
# against, for 2 CPU cores: HuBERT pre-training on 18,000 utterances (labeled + unlabeled,
# 9.6 h), fine-tuning on 6,000 (3.2 h), test-clean and test-other of 1,000 utterances
# (about 5,500 words) each, dev-clean / dev-other of 300. Run:
#   ./run.sh --config_set reference --stop_stage 9     # the 32-bit model (stages 1-9)
#   python local/reference_results.py collect --exp reference/exp --upstream ssl \
#     --test_clean test_synth --test_other test_other_synth --output results/reference.json
# Time, measured 2026-11-26 on 2 idle CPU cores (egs/librispeech/RESULTS.md): synthesis about
# 6 min, k-means + units + 3 pre-training epochs 2,112 s, 20 fine-tuning epochs 4,383 s,
# decoding 2,000 utterances 59 s: 1 h 55 min for stages 1-9. Every stage resumes (.done
# markers; ESPnet --resume; the stage clocks sum every run).
work=reference
num_train=6000
num_unlab=12000
num_dev=300
num_dev_other=300
num_test=1000
num_test_other=1000
vocab_size=8000                          # 16,864 phrases: enough for 2,600 held out + 6,000 train
test_subsets="$test_clean $test_other"
upstream_preset=tiny
upstream_args="--embed_dim 128 --ffn_dim 512 --num_layers 3 --heads 4 --pos_conv_groups 8 --conv_channels 32"
num_clusters=100
kmeans_utts=3000
pretrain_overrides="max_epoch=3"
train_overrides=""
fp32_overrides="max_epoch=20"
use_lm=true                              # character LSTM LM on WordNet's text (stage 8), shallow fusion (9, 11)
