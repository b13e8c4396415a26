#!/usr/bin/env bash
# CTC best path (--ctc_greedy true) against ESPnet's prefix beam search (beam 1), side by side
# on one test set: wall clock of each decoding (process start-up included, $nj jobs) and the
# WER of each, with the MAPSSWE test of greedy against beam. One thread a job, as run.sh.
#
# Usage (in egs/librispeech, after stage 9):
#   ../../bench/greedy_vs_beam.sh CONFIG MODEL DUMP_SET OUT_DIR [NJ]
#   ../../bench/greedy_vs_beam.sh exp/asr_fp32/config.yaml exp/asr_fp32/valid.loss.ave.pth \
#       dump/raw/test_synth exp/greedy_vs_beam/test_synth
# Last line (machine-readable): decode_wall_ratio greedy/beam = X.XX
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0" >&2; exit 1; }
config=$1 model=$2 set=$3 out=$4 nj=${5:-2}
for f in "$config" "$model" "$set/wav.scp" "$set/text"; do
  [ -f "$f" ] || { echo "error: $f not found" >&2; exit 1; }
done
[ -f local/decode_set.sh ] || { echo "error: run me in egs/librispeech" >&2; exit 1; }
. ./path.sh
mkdir -p "$out"

decode() {  # decode NAME EXTRA_ARGS...: local/decode_set.sh into $out/NAME; prints the wall seconds
  local name=$1 start
  shift
  start=$(date +%s.%N)
  local/decode_set.sh "$set" "$out/$name" "$nj" --asr_train_config "$config" --asr_model_file "$model" \
    --ngpu 0 --batch_size 1 --beam_size 1 --ctc_weight 1.0 --lm_weight 0 "$@" >&2 || exit 1  # a subshell: set -e does not reach it
  awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f\n", a - b }'
}

beam_s=$(decode beam)
greedy_s=$(decode greedy --ctc_greedy true)
python -m espnet_mpq.bin.score --ref "$set/text" --hyp "beam=$out/beam/text" --hyp "greedy=$out/greedy/text" \
  --baseline beam --output_json "$out/score.json"
echo "utterances $(wc -l < "$set/wav.scp"), $nj jobs, load average $(cut -d' ' -f1 /proc/loadavg)"
echo "wall beam ${beam_s} s, greedy ${greedy_s} s"
awk -v g="$greedy_s" -v b="$beam_s" 'BEGIN { printf "decode_wall_ratio greedy/beam = %.2f\n", g / b }'
