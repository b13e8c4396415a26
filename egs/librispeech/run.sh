#!/usr/bin/env bash
# Mixed-precision quantization of a speech SSL upstream (HuBERT) fine-tuned for ASR,
# on LibriSpeech or, when db.sh gives no LibriSpeech, the built-in synthesized corpus.
#
#   ./run.sh                                        # stages 1-13: built-in corpus, joint 3.5-bit
#   ./run.sh --stage 10 --mpq_config conf/tuning/train_mpq_uniform_4bit.yaml
#   ./run.sh --config_set smoke --work /tmp/smoke   # tiny sizes (conf/sets/smoke.sh), elsewhere
#   LIBRISPEECH=/data/LibriSpeech ./run.sh --upstream hubert --ngpu 1
#
# Stages (each skips finished work: .done markers, atomic outputs):
#   1 data: synthesize the built-in corpus if needed, Kaldi dirs via local/prepare_data.py
#   2 format (+ utt2num_samples)   3 length filtering   4 speed perturbation (off by default)
#   5 token list (char, or bpe via sentencepiece)
#   6 upstream: a hub name or file as given, or (built-in) a random-init ESPnet HuBERT
#     (torchaudio_hubert) pre-trained with ESPnet's HuBERT task on MFCC k-means units of
#     the training and unlabeled audio (--pretrain false: left random-init)
#   7 shape files (--use_lm true: and the LM's text and shapes)
#   8 32-bit training (--use_lm true: and the LM)   9 32-bit decoding + scoring
#   10 compression with --mpq_config (initialised and distilled from the 32-bit model); two_stage
#      searches, then trains at the bits found, unless its quantizer_conf has a bit_config (a
#      bits.yaml of an earlier run, path relative to this directory): then it only trains at those
#      (a changed bits file counts as a changed config)
#   11 decoding of the compressed model   12 scoring against the 32-bit model (sclite, sc_stats)
#   13 packed export + report ($work/exp/results.md, bits-per-layer PNG)
# Compression results live in $work/exp/asr_mpq_<config name>/. Stage 10 starts that
# directory afresh when the composed config differs from the one it was trained with,
# resumes an interrupted training otherwise, and skips a finished one: --force true
# (or deleting the directory) re-runs it. Decoding, scoring and the report after it
# are redone whenever compression is. Stage 10 needs stage 8's .done. The wall clock of
# every run of stages 6, 8 and 10 (resumes included) is summed in pretrain_time.json,
# asr_fp32/train_time.json and compression_time.json; each train.log keeps the log of every
# run. Bad options stop run.sh with one "error:" line.
# --use_lm true adds a language model (ESPnet's LM task, conf/train_lm.yaml, the ASR's token
# list) trained in stage 8 on --lm_text, and decodes with shallow fusion (conf/decode_asr_lm.yaml)
# in stages 9 and 11. Each decode_<set>/decoding.txt says which LM made it; a set decoded with
# another LM (or none) is decoded again.
set -euo pipefail

log() { echo "$(date '+%F %T') (${0##*/}) $*"; }
die() { log "error: $*" >&2; exit 1; }

cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. ./db.sh

stage=1
stop_stage=13
nj=2                 # parallel jobs (synthesis, decoding; a decoding job runs one thread)
ngpu=0               # GPUs for training (0: CPU)
work=.               # where db/ (built-in corpus), data/, dump/, exp/ go
train_config=conf/train_asr.yaml
decode_config=conf/decode_asr.yaml
mpq_config=conf/tuning/train_mpq_joint_3.5bit.yaml
force=false          # true: re-run stage 10 even if it finished with the same config
token_type=char      # char or bpe
nbpe=300
speed_perturb_factors=""   # e.g. "0.9 1.0 1.1"
upstream=""          # empty: build (and pre-train) an ESPnet HuBERT in stage 6; else an s3prl hub name or a checkpoint
pretrain=true        # stage 6: HuBERT pre-training of the built upstream (false: fine-tune it from random init)
pretrain_config=conf/pretrain_hubert.yaml
use_lm=false         # true: train an LM in stage 8 and decode with it (shallow fusion) in stages 9 and 11
lm_config=conf/train_lm.yaml
decode_lm_config=conf/decode_asr_lm.yaml
lm_text=""           # LM training text (Kaldi text); empty: built-in corpus: WordNet's text without any dev or
                     # test transcript (local/lm_text.py); LibriSpeech: the training transcripts
lm_max_lines=0       # built-in LM text: keep the first N lines (0: all)
lm_overrides=""      # compose_config --set items for the LM training
upstream_arch=hubert # model class of a local checkpoint (hubert or wav2vec2)
corpus=""            # LibriSpeech-layout root; empty: $LIBRISPEECH, or $work/db/LibriSynth (built-in)
# Subsets by role, so that config sets name roles ("$test_clean $test_other"), not a corpus's subsets.
if [ -z "$LIBRISPEECH" ]; then
  train_subset=train-synth; unlab_subsets=train-unlab-synth; valid_subset=dev-synth
  dev_clean=dev-synth; dev_other=dev-other-synth; test_clean=test-synth; test_other=test-other-synth
else
  # Pre-training (stage 6, only without --upstream) on train-clean-100's audio; add more with
  # --unlab_subsets "train-clean-360 train-other-500".
  train_subset=train-clean-100; unlab_subsets=""; valid_subset=dev-clean
  dev_clean=dev-clean; dev_other=dev-other; test_clean=test-clean; test_other=test-other
fi
test_subsets="$dev_clean $dev_other $test_clean $test_other"
config_set=default   # conf/sets/<name>.sh: sizes of corpus, upstream and training runs
# The config set is read before the other options (so that they override it).
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = --config_set ]; then config_set=${args[$((i + 1))]:-}; fi
done
[ -f "conf/sets/${config_set}.sh" ] || die "--config_set ${config_set}: no conf/sets/${config_set}.sh"
. "conf/sets/${config_set}.sh"
help_message="Usage: $0 [--stage N] [--stop_stage M] [--nj K] [--ngpu G] [--config_set NAME]
  [--mpq_config conf/tuning/X.yaml] [--force true] [--work DIR] [--token_type char|bpe] ...
(every variable set above 'help_message' in $0 is an option; see the header of $0)"
. utils/parse_options.sh
[ $# -eq 0 ] || die "unexpected arguments: $*"
for opt in stage stop_stage nj ngpu; do
  [[ ${!opt} =~ ^[0-9]+$ ]] || die "--$opt ${!opt}: must be a non-negative integer"
done
[ "$stage" -le "$stop_stage" ] || die "--stage $stage is after --stop_stage $stop_stage: nothing to run"
[[ $force =~ ^(true|false)$ ]] || die "--force $force: must be true or false"
[[ $pretrain =~ ^(true|false)$ ]] || die "--pretrain $pretrain: must be true or false"
[[ $use_lm =~ ^(true|false)$ ]] || die "--use_lm $use_lm: must be true or false"
[[ $lm_max_lines =~ ^[0-9]+$ ]] || die "--lm_max_lines $lm_max_lines: must be a non-negative integer"
[ -z "$lm_text" ] || [ -s "$lm_text" ] || die "--lm_text $lm_text: no such file, or empty"
corpus=${corpus:-${LIBRISPEECH:-$work/db/LibriSynth}}

# ---------------------------------------------------------------- names and paths
name() { echo "${1//-/_}"; }
train_set=$(name "$train_subset"); valid_set=$(name "$valid_subset")
test_sets=""; for s in $test_subsets; do test_sets+=" $(name "$s")"; done
data=$work/data; dump=$work/dump/raw; exp=$work/exp
train_dir=$dump/${train_set}_filt
[ -z "$speed_perturb_factors" ] || train_dir=$dump/${train_set}_sp
valid_dir=$dump/${valid_set}_filt
if [ "$token_type" = bpe ]; then
  token_dir=$data/token_list/bpe$nbpe; bpemodel=$token_dir/bpe.model
else
  token_dir=$data/token_list/$token_type; bpemodel=none
fi
token_list=$token_dir/tokens.txt
fp32_dir=$exp/asr_fp32
fp32_model=$fp32_dir/valid.loss.best.pth
lm_dir=$exp/lm
lm_model=$lm_dir/valid.loss.best.pth
lm_data=$data/lm
# Where the LM's text came from; an LM built from other text is refused, not silently reused.
lm_source="lm_text: ${lm_text:-built-in} lm_max_lines: $lm_max_lines"
if [ "$use_lm" = true ] && [ -f "$lm_data/source" ] && [ "$(cat "$lm_data/source")" != "$lm_source" ]; then
  die "$lm_data was built from '$(cat "$lm_data/source")', not '$lm_source': remove $lm_data and $lm_dir to rebuild the LM"
fi

upstream_dir=$exp/upstream
random_ckpt=$upstream_dir/random/model.pth
ssl_dir=$upstream_dir/hubert_iter0
if [ -z "$upstream" ]; then
  upstream_ckpt=$(realpath -ms "$random_ckpt")
  # The last pre-training epoch: the masked-prediction loss on a small dev set is noisy (random masks).
  [ "$pretrain" = false ] || upstream_ckpt=$(realpath -ms "$ssl_dir/latest.pth")
  frontend_sets="frontend_conf.upstream=espnet_hubert_local frontend_conf.path_or_url=$upstream_ckpt"
elif [ -f "$upstream" ]; then
  frontend_sets="frontend_conf.upstream=${upstream_arch}_local frontend_conf.path_or_url=$(realpath "$upstream")"
else
  frontend_sets="frontend_conf.upstream=$upstream frontend_conf.path_or_url=null"
fi
sets=""; for s in $train_overrides $frontend_sets; do sets+=" --set $s"; done
fp32_sets=""; for s in $fp32_overrides; do fp32_sets+=" --set $s"; done

# The compression config, composed and checked now so that a bad --mpq_config fails at once.
[ -f "$mpq_config" ] || die "--mpq_config $mpq_config: no such file; available: $(ls conf/tuning | tr '\n' ' ')"
tag=$(basename "$mpq_config" .yaml); tag=${tag#train_mpq_}
mpq_dir=$exp/asr_mpq_$tag
mpq_composed=$mpq_dir/.train.yaml.new
# Composed and checked outside $mpq_dir, which is made only for a valid config.
composed_tmp=$(mktemp "${TMPDIR:-/tmp}/mpq_config.XXXXXX")
# shellcheck disable=SC2086
python -m espnet_mpq.bin.compose_config --base "$train_config" --preset "$mpq_config" $sets \
  --set "model_conf.teacher_config=$(realpath -ms $fp32_dir/config.yaml)" \
  --set "model_conf.teacher_model_file=$(realpath -ms $fp32_model)" --output "$composed_tmp" \
  || { rm -f "$composed_tmp"; die "--mpq_config $mpq_config: cannot compose it over $train_config"; }
# "NAME SEARCHES BIT_CONFIG": the quantizer's name, 1 if it searches bit-widths (two_stage without a
# bit_config), and its bit_config file (empty: none).
quantizer=$(python -c 'import sys, yaml; from espnet_mpq.quantizers import build_config
f = yaml.safe_load(open(sys.argv[1]))["frontend_conf"]
q = build_config(f["quantizer"], f.get("quantizer_conf"))
print(q.name, int(q.searches), getattr(q, "bit_config", None) or "")' "$composed_tmp" 2>&1) \
  || { rm -f "$composed_tmp"; die "--mpq_config $mpq_config: bad quantizer: ${quantizer##*$'\n'}"; }
read -r quantizer searches bit_config <<< "$quantizer"
# The bits in a bit_config file are part of the config: the md5 of its content goes into the composed
# file, so that stage 10 trains afresh (neither skips nor resumes) when that file has changed.
[ -z "$bit_config" ] || echo "# bit_config md5: $(md5sum < "$bit_config" | cut -d' ' -f1)" >> "$composed_tmp"
mkdir -p "$mpq_dir"
mv "$composed_tmp" "$mpq_composed"

train_data_args=(
  --token_type "$token_type" --token_list "$token_list" --bpemodel "$bpemodel" --ngpu "$ngpu" --resume true
  --train_data_path_and_name_and_type "$train_dir/wav.scp,speech,sound"
  --train_data_path_and_name_and_type "$train_dir/text,text,text"
  --train_shape_file "$train_dir/speech_shape" --train_shape_file "$train_dir/text_shape"
  --valid_data_path_and_name_and_type "$valid_dir/wav.scp,speech,sound"
  --valid_data_path_and_name_and_type "$valid_dir/text,text,text"
  --valid_shape_file "$valid_dir/speech_shape" --valid_shape_file "$valid_dir/text_shape"
  --fold_length 160000 --fold_length 150
)

# train CONFIG OUTPUT_DIR [asr_train options]: ESPnet training that resumes if interrupted.
train() {
  local config=$1 dir=$2; shift 2
  ${train_cmd} "$dir/train.log" python -m espnet_mpq.bin.asr_train --config "$config" --output_dir "$dir" \
    "${train_data_args[@]}" "$@"
}

# Wall clocks of the long stages (6: k-means + pre-training, 8: 32-bit training, 10: compression),
# summed over every run of the stage (a resumed run adds a piece; two_stage's two trainings are
# both in stage 10's). A piece is a file in DIR/.clock/ holding its seconds so far, rewritten
# every 5 s while run.sh lives, so even a kill -9 loses at most 5 s of it; clock_json sums them.
clock_write() { echo $(( $(date +%s) - clock_t0 )) > "$clock_piece.tmp" && mv "$clock_piece.tmp" "$clock_piece"; }
clock_start() {  # clock_start DIR
  clock_t0=$(date +%s); clock_piece=$1/.clock/$clock_t0.$$
  mkdir -p "$1/.clock"; clock_write
  ( while kill -0 $$ 2>/dev/null; do clock_write; sleep 5; done ) > /dev/null 2>&1 &
  clock_pid=$!
}
clock_stop() { kill "$clock_pid" 2>/dev/null || true; wait "$clock_pid" 2>/dev/null || true; clock_write; }
# clock_json DIR OUT [KEY VALUE ...]: {"seconds": summed pieces, "runs": pieces, "device": ..., KEY: VALUE} into OUT.
clock_json() {
  local dir=$1 out=$2 extra="" device="CPU ($(nproc --all) cores)"  # --all: nproc alone honours OMP_NUM_THREADS
  shift 2
  [ "$ngpu" -eq 0 ] || device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
  while [ $# -ge 2 ]; do extra+=", \"$1\": \"$2\""; shift 2; done
  printf '{"seconds": %d, "runs": %d, "device": "%s"%s}\n' \
    "$(cat "$dir"/.clock/*[0-9] | awk '{ s += $1 } END { print s + 0 }')" "$(ls "$dir"/.clock/*[0-9] | wc -l)" \
    "$device" "$extra" > "$out.tmp"
  mv "$out.tmp" "$out"
}

# decoding_txt: what decode_<set>/decoding.txt holds, the LM in use and its checksum (a directory
# without it was decoded before run.sh had LMs: without one).
decoding_txt() {
  if [ "$use_lm" = true ]; then
    printf 'lm_file: %s\nlm_md5: %s\n' "$(realpath -ms "$lm_model")" "$(md5sum < "$lm_model" | cut -d' ' -f1)"
  else
    echo "lm_file: none"
  fi
}
decoded_with() {  # decoded_with DIR: the decoding.txt of DIR (the no-LM one if absent)
  if [ -f "$1/decoding.txt" ]; then cat "$1/decoding.txt"; else echo "lm_file: none"; fi
}

# decode CONFIG MODEL DIR: decoding (conf/decode_asr.yaml, or conf/decode_asr_lm.yaml with the LM)
# of every test set into DIR/decode_<set>/text. The sets not yet done with this LM run side by side,
# $nj jobs shared among them (at least one each).
decode() {
  local config=$1 model=$2 dir=$3 dset sets=() pids=() want
  if [ "$use_lm" = true ]; then
    [ -f "$lm_dir/.done" ] || die "--use_lm true: the LM has not been trained ($lm_dir/.done missing): run stage 8"
  fi
  want=$(decoding_txt)
  for dset in $test_sets; do
    [ -f "$dir/decode_$dset/.done" ] && [ "$(decoded_with "$dir/decode_$dset")" = "$want" ] || sets+=("$dset")
  done
  [ ${#sets[@]} -gt 0 ] || return 0
  for dset in "${sets[@]}"; do
    DECODING_TXT=$want decode_set "$config" "$model" "$dir/decode_$dset" "$dset" \
      $(( nj > ${#sets[@]} ? nj / ${#sets[@]} : 1 )) &
    pids+=($!)
  done
  wait_all "${pids[@]}" || die "decoding failed, see $dir/decode_*/log/"
}

# wait_all PID...: wait for every one (none is left running behind a failure); fails if any failed.
wait_all() {
  local pid failed=0
  for pid in "$@"; do wait "$pid" || failed=1; done
  return "$failed"
}

# decode_set CONFIG MODEL OUT SET JOBS: one test set (local/decode_set.sh) into OUT (and $DECODING_TXT
# into OUT/decoding.txt).
decode_set() {
  local lm_args=(--config "$decode_config")
  [ "$use_lm" = false ] || lm_args=(--config "$decode_lm_config" --lm_train_config "$lm_dir/config.yaml" --lm_file "$lm_model")
  local/decode_set.sh "$dump/$4" "$3" "$5" "${lm_args[@]}" --asr_train_config "$1" --asr_model_file "$2" --ngpu 0
}

log "$0 $* (config set $config_set, corpus $corpus, compression $mpq_config: $quantizer)"

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  extra=""; [ -n "$upstream" ] || [ "$pretrain" = false ] || extra=$unlab_subsets  # audio for stage 6's pre-training
  subsets=$(echo "$train_subset $valid_subset $test_subsets $extra" | tr ' ' '\n' | sort -u | tr '\n' ' ')
  log "Stage 1: data: Kaldi directories of $subsets from $corpus"; t0=$SECONDS
  if [ "$corpus" = "$work/db/LibriSynth" ] && [ ! -f "$corpus/.done" ]; then
    log "no LIBRISPEECH in db.sh: synthesizing the built-in corpus (train $num_train, unlabeled $num_unlab," \
      "dev $num_dev + $num_dev_other other, test $num_test + $num_test_other other utterances)"
    python local/synthesize_corpus.py --out "$corpus" --num_train "$num_train" --num_dev "$num_dev" \
      --num_test "$num_test" --num_unlab "$num_unlab" --num_dev_other "$num_dev_other" \
      --num_test_other "$num_test_other" --vocab_size "$vocab_size" --nj "$nj"
  fi
  for subset in $subsets; do
    dir=$data/$(name "$subset")
    [ -f "$dir/.done" ] && continue
    python local/prepare_data.py --root "$corpus" --subset "$subset" --out "$dir" || die "data preparation of $subset failed"
    touch "$dir/.done"
  done
  log "Stage 1: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: format $data/* into $dump/* (checks, utt2num_samples)"; t0=$SECONDS
  for dset in $(echo "$train_set $valid_set $test_sets" | tr ' ' '\n' | sort -u); do
    [ -f "$dump/$dset/.done" ] || python local/kaldi_dir.py format --src "$data/$dset" --dst "$dump/$dset"
  done
  log "Stage 2: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: length filtering of the training and validation sets"; t0=$SECONDS
  for dset in $train_set $valid_set; do
    [ -f "$dump/${dset}_filt/.done" ] || python local/kaldi_dir.py filter --src "$dump/$dset" --dst "$dump/${dset}_filt"
  done
  log "Stage 3: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  if [ -z "$speed_perturb_factors" ]; then
    log "Stage 4: speed perturbation: off (--speed_perturb_factors '0.9 1.0 1.1' turns it on)"
  else
    log "Stage 4: speed perturbation of $train_set by $speed_perturb_factors"; t0=$SECONDS
    # shellcheck disable=SC2086
    [ -f "$train_dir/.done" ] || python local/kaldi_dir.py perturb --src "$dump/${train_set}_filt" --dst "$train_dir" \
      --factors $speed_perturb_factors --audio_dir "$work/dump/audio/${train_set}_sp"
    log "Stage 4: done in $((SECONDS - t0)) s"
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: $token_type token list $token_list"; t0=$SECONDS
  if [ ! -f "$token_list" ]; then
    mkdir -p "$token_dir"
    if [ "$token_type" = bpe ]; then
      python local/train_bpe.py --text "$train_dir/text" --vocab_size "$nbpe" --model_prefix "$token_dir/bpe"
    fi
    python -m espnet_mpq.bin.espnet espnet2.bin.tokenize_text --token_type "$token_type" --bpemodel "$bpemodel" \
      --input "$train_dir/text" --output "$token_dir/.tokens.txt.tmp" --field 2- --write_vocabulary true \
      --add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'
    mv "$token_dir/.tokens.txt.tmp" "$token_list"
  fi
  log "Stage 5: done in $((SECONDS - t0)) s ($(wc -l < "$token_list") tokens)"
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  if [ -n "$upstream" ]; then
    log "Stage 6: upstream $upstream (${frontend_sets}): nothing to build"
  else
    log "Stage 6: random-init ESPnet HuBERT ($upstream_preset $upstream_args) -> $random_ckpt"; t0=$SECONDS
    # An upstream built, or pre-trained, with other options is refused, not reused.
    build_args="--arch espnet_hubert --preset $upstream_preset $upstream_args --num_classes $num_clusters"
    if [ -f "$random_ckpt" ] && [ -f "$upstream_dir/random/build_args" ] \
      && [ "$(cat "$upstream_dir/random/build_args")" != "$build_args" ]; then
      die "$random_ckpt was built with '$(cat "$upstream_dir/random/build_args")', not '$build_args'" \
        "(--upstream_preset, --upstream_args, --num_clusters): remove $upstream_dir to build it again"
    fi
    if [ ! -f "$random_ckpt" ]; then
      # shellcheck disable=SC2086
      python -m espnet_mpq.bin.build_upstream $build_args --output "$random_ckpt"
      echo "$build_args" > "$upstream_dir/random/build_args"
    fi
    if [ "$pretrain" = true ]; then
      # The pre-training config as this run would use it (a run whose .done has no pretrain.yaml is reused).
      mkdir -p "$ssl_dir"
      pretrain_sets=""; for s in $pretrain_overrides; do pretrain_sets+=" --set $s"; done
      # shellcheck disable=SC2086
      python -m espnet_mpq.bin.compose_config --base "$upstream_dir/random/config.yaml" --preset "$pretrain_config" \
        $pretrain_sets --output "$ssl_dir/.pretrain.yaml.new"
      if [ -f "$ssl_dir/.done" ] && [ -f "$ssl_dir/pretrain.yaml" ] && ! cmp -s "$ssl_dir/.pretrain.yaml.new" "$ssl_dir/pretrain.yaml"; then
        die "$ssl_dir was pre-trained with another config than --pretrain_config $pretrain_config" \
          "--pretrain_overrides '$pretrain_overrides' (see $ssl_dir/pretrain.yaml): remove $ssl_dir to pre-train again"
      fi
      [ ! -f "$ssl_dir/.done" ] || rm "$ssl_dir/.pretrain.yaml.new"
    fi
    if [ "$pretrain" = true ] && [ ! -f "$ssl_dir/.done" ]; then
      scps=""; for s in $train_subset $unlab_subsets; do scps+=" $data/$(name "$s")/wav.scp"; done
      units=$work/dump/hubert_units
      log "HuBERT iteration 0: $num_clusters k-means units of MFCCs, then ESPnet's HuBERT task -> $ssl_dir"
      mkdir -p "$ssl_dir"
      clock_start "$ssl_dir"
      # shellcheck disable=SC2086
      [ -f "$units/km.pkl" ] || python local/hubert_units.py learn --wav_scp $scps --num_clusters "$num_clusters" \
        --max_utts "$kmeans_utts" --output "$units/km.pkl"
      # shellcheck disable=SC2086
      [ -f "$units/train/.done" ] || python local/hubert_units.py dump --wav_scp $scps --kmeans "$units/km.pkl" --out_dir "$units/train"
      [ -f "$units/valid/.done" ] || python local/hubert_units.py dump --wav_scp "$data/$valid_set/wav.scp" \
        --kmeans "$units/km.pkl" --out_dir "$units/valid"
      mv "$ssl_dir/.pretrain.yaml.new" "$ssl_dir/pretrain.yaml"
      ${train_cmd} "$ssl_dir/train.log" python -m espnet2.bin.hubert_train --config "$ssl_dir/pretrain.yaml" \
        --output_dir "$ssl_dir" --ngpu "$ngpu" --resume true --init_param "$random_ckpt" \
        --token_type word --token_list "$units/train/tokens.txt" \
        --train_data_path_and_name_and_type "$units/train/wav.scp,speech,sound" \
        --train_data_path_and_name_and_type "$units/train/text,text,text" \
        --train_shape_file "$units/train/speech_shape" --train_shape_file "$units/train/text_shape" \
        --valid_data_path_and_name_and_type "$units/valid/wav.scp,speech,sound" \
        --valid_data_path_and_name_and_type "$units/valid/text,text,text" \
        --valid_shape_file "$units/valid/speech_shape" --valid_shape_file "$units/valid/text_shape" \
        --fold_length 160000 --fold_length 500
      clock_stop
      clock_json "$ssl_dir" "$ssl_dir/pretrain_time.json"  # every run of the k-means and pre-training
      touch "$ssl_dir/.done"
    fi
    log "Stage 6: done in $((SECONDS - t0)) s (fine-tuning starts from $upstream_ckpt)"
  fi
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  # Our own shape files instead of asr_train --collect_stats: collect_stats would run the
  # s3prl frontend over every utterance for nothing, as the model normalises per utterance
  # (utterance_mvn) and needs no global statistics; the lengths are all it would give.
  log "Stage 7: shape files (speech samples, $token_type tokens)"; t0=$SECONDS
  [ "$train_dir/text_shape" -nt "$token_list" ] && [ "$valid_dir/text_shape" -nt "$token_list" ] \
    || python local/kaldi_dir.py shapes --src "$train_dir" "$valid_dir" --token_type "$token_type" \
      --bpemodel "${bpemodel/none/}"
  if [ "$use_lm" = true ] && [ ! -f "$lm_data/.done" ]; then
    mkdir -p "$lm_data"
    if [ -n "$lm_text" ]; then
      cp "$lm_text" "$lm_data/text"
    elif [ "$corpus" = "$work/db/LibriSynth" ]; then
      # Every subset of the corpus that is not training audio is held out of the LM's text.
      held_out=()
      for dir in "$corpus"/*/; do
        case " $train_subset $unlab_subsets " in *" $(basename "$dir") "*) ;; *) held_out+=("$dir") ;; esac
      done
      python local/lm_text.py --exclude "${held_out[@]}" --max_lines "$lm_max_lines" --output "$lm_data/text"
    else
      cp "$train_dir/text" "$lm_data/text"
    fi
    echo "$lm_source" > "$lm_data/source"
    head -n 200 "$valid_dir/text" > "$lm_data/valid_text"
    # ESPnet's LM shape files (its --collect_stats, as asr.sh does: text only, no model).
    rm -rf "$lm_data/stats"
    python -m espnet_mpq.bin.espnet espnet2.bin.lm_train --collect_stats true --use_preprocessor true \
      --token_type "$token_type" --token_list "$token_list" --bpemodel "$bpemodel" --cleaner none --g2p none \
      --non_linguistic_symbols none --config "$lm_config" --output_dir "$lm_data/stats" \
      --train_data_path_and_name_and_type "$lm_data/text,text,text" --train_shape_file "$lm_data/text" \
      --valid_data_path_and_name_and_type "$lm_data/valid_text,text,text" --valid_shape_file "$lm_data/valid_text" \
      > "$lm_data/stats.log" 2>&1 || die "LM shape files failed, see $lm_data/stats.log"
    touch "$lm_data/.done"
  fi
  log "Stage 7: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: 32-bit training -> $fp32_dir (log: $fp32_dir/train.log)"; t0=$SECONDS
  # The 32-bit config as this run would train it; a model trained with another one is refused,
  # not reused (a run whose .done has no train.yaml predates the check and is reused).
  mkdir -p "$fp32_dir"
  # shellcheck disable=SC2086
  python -m espnet_mpq.bin.compose_config --base "$train_config" $sets $fp32_sets --output "$fp32_dir/.train.yaml.new"
  if [ -f "$fp32_dir/.done" ] && [ -f "$fp32_dir/train.yaml" ] && ! cmp -s "$fp32_dir/.train.yaml.new" "$fp32_dir/train.yaml"; then
    die "$fp32_dir was trained with another config than --train_config $train_config --train_overrides '$train_overrides'" \
      "--fp32_overrides '$fp32_overrides' and this upstream (see $fp32_dir/train.yaml): remove $fp32_dir to train it again"
  fi
  if [ -f "$fp32_dir/.done" ]; then
    rm "$fp32_dir/.train.yaml.new"
  else
    mv "$fp32_dir/.train.yaml.new" "$fp32_dir/train.yaml"
    clock_start "$fp32_dir"
    train "$fp32_dir/train.yaml" "$fp32_dir"
    clock_stop
    clock_json "$fp32_dir" "$fp32_dir/train_time.json"
    touch "$fp32_dir/.done"
  fi
  if [ "$use_lm" = true ]; then
    # The LM's config as this run would train it; an LM trained with another one is refused, not reused.
    mkdir -p "$lm_dir"
    lm_sets=""; for s in $lm_overrides; do lm_sets+=" --set $s"; done
    # shellcheck disable=SC2086
    python -m espnet_mpq.bin.compose_config --base "$lm_config" $lm_sets --output "$lm_dir/.train.yaml.new"
    if [ -f "$lm_dir/.done" ] && ! cmp -s "$lm_dir/.train.yaml.new" "$lm_dir/train.yaml"; then
      die "$lm_dir was trained with another config than --lm_config $lm_config --lm_overrides '$lm_overrides'" \
        "(see $lm_dir/train.yaml): remove $lm_dir to train it again"
    fi
    [ ! -f "$lm_dir/.done" ] || rm "$lm_dir/.train.yaml.new"
  fi
  if [ "$use_lm" = true ] && [ ! -f "$lm_dir/.done" ]; then
    [ -f "$lm_data/.done" ] || die "--use_lm true: no LM text ($lm_data/.done missing): run stage 7"
    log "Stage 8: LM training -> $lm_dir (log: $lm_dir/train.log)"
    mv "$lm_dir/.train.yaml.new" "$lm_dir/train.yaml"
    clock_start "$lm_dir"
    ${train_cmd} "$lm_dir/train.log" python -m espnet_mpq.bin.espnet espnet2.bin.lm_train --config "$lm_dir/train.yaml" \
      --output_dir "$lm_dir" --ngpu "$ngpu" --resume true --use_preprocessor true --token_type "$token_type" \
      --token_list "$token_list" --bpemodel "$bpemodel" --cleaner none --g2p none --non_linguistic_symbols none \
      --train_data_path_and_name_and_type "$lm_data/text,text,text" \
      --train_shape_file "$lm_data/stats/train/text_shape" \
      --valid_data_path_and_name_and_type "$lm_data/valid_text,text,text" \
      --valid_shape_file "$lm_data/stats/valid/text_shape" --fold_length 150
    clock_stop
    clock_json "$lm_dir" "$lm_dir/train_time.json"
    touch "$lm_dir/.done"
  fi
  log "Stage 8: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: 32-bit decoding and scoring of$test_sets"; t0=$SECONDS
  decode "$fp32_dir/config.yaml" "$fp32_model" "$fp32_dir"
  for dset in $test_sets; do
    python -m espnet_mpq.bin.score --ref "$dump/$dset/text" --hyp "fp32=$fp32_dir/decode_$dset/text" \
      --baseline fp32 --output_json "$fp32_dir/decode_$dset/score.json" --errs_dir "$fp32_dir/decode_$dset/scoring"
  done
  log "Stage 9: done in $((SECONDS - t0)) s"
fi

# Where stage 10 leaves the compressed model.
case $quantizer in
  none) mpq_train_config=$fp32_dir/config.yaml; mpq_model=$fp32_model ;;
  ptq) mpq_train_config=$mpq_dir/config.yaml; mpq_model=$mpq_dir/model.pth ;;
  # The last epoch, not the best validation loss: during the search epochs the bit-widths
  # are not yet fixed and the loss includes the size penalty.
  *) mpq_train_config=$mpq_dir/config.yaml; mpq_model=$mpq_dir/latest.pth ;;
esac

if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  log "Stage 10: compression with $mpq_config ($quantizer) -> $mpq_dir"; t0=$SECONDS
  [ -f "$fp32_dir/.done" ] || die "the 32-bit training has not finished ($fp32_dir/.done missing): run stage 8 first"
  [ -f "$fp32_model" ] || die "no 32-bit model $fp32_model: run stages 1-8 first"
  if [ -f "$mpq_dir/.done" ] && [ "$force" = false ] && cmp -s "$mpq_composed" "$mpq_dir/train.yaml"; then
    log "Stage 10: already done with this config ($mpq_dir/.done; --force true re-runs it)"
  else
    if [ "$force" = true ] || ! cmp -s "$mpq_composed" "$mpq_dir/train.yaml" 2>/dev/null; then
      log "starting $mpq_dir afresh"
      find "$mpq_dir" -mindepth 1 ! -name "$(basename "$mpq_composed")" -delete
    fi
    cp "$mpq_composed" "$mpq_dir/train.yaml"
    clock_start "$mpq_dir"
    case $quantizer in
      none) ;;
      ptq)
        python -m espnet_mpq.bin.ptq --asr_train_config "$fp32_dir/config.yaml" --asr_model_file "$fp32_model" \
          --config "$mpq_dir/train.yaml" --output_dir "$mpq_dir" ;;
      uniform|joint)
        train "$mpq_dir/train.yaml" "$mpq_dir" --init_param "$fp32_model" ;;
      two_stage)
        if [ "$searches" = 0 ]; then
          log "two-stage with the config's bit_config: its stage 2 only (quantization-aware training from the 32-bit model)"
          train "$mpq_dir/train.yaml" "$mpq_dir" --init_param "$fp32_model"
        else
          log "two-stage, 1/2: bit-width search (joint's search phase) -> $mpq_dir/search"
          python -m espnet_mpq.bin.compose_config --base "$mpq_dir/train.yaml" --two_stage_search \
            --output "$mpq_dir/train_search.yaml"
          train "$mpq_dir/train_search.yaml" "$mpq_dir/search" --init_param "$fp32_model"
          python -m espnet_mpq.bin.export --asr_train_config "$mpq_dir/search/config.yaml" \
            --asr_model_file "$mpq_dir/search/latest.pth" --output_bit_config "$mpq_dir/search/bits.yaml" \
            --output "$mpq_dir/search/model.mpq"
          log "two-stage, 2/2: quantization-aware training from the 32-bit model with $mpq_dir/search/bits.yaml"
          python -m espnet_mpq.bin.compose_config --base "$mpq_dir/train.yaml" \
            --set "frontend_conf.quantizer_conf.bit_config=$(realpath "$mpq_dir/search/bits.yaml")" \
            --output "$mpq_dir/train_stage2.yaml"
          train "$mpq_dir/train_stage2.yaml" "$mpq_dir" --init_param "$fp32_model"
        fi ;;
    esac
    clock_stop
    clock_json "$mpq_dir" "$mpq_dir/compression_time.json" quantizer "$quantizer"
    touch "$mpq_dir/.done"
  fi
  log "Stage 10: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  log "Stage 11: decoding of the compressed model ($mpq_model)"; t0=$SECONDS
  decode "$mpq_train_config" "$mpq_model" "$mpq_dir"
  log "Stage 11: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 12 ] && [ $stop_stage -ge 12 ]; then
  log "Stage 12: scoring $tag against fp32 (WER, MAPSSWE)"; t0=$SECONDS
  for dset in $test_sets; do
    [ "$(decoded_with "$fp32_dir/decode_$dset")" = "$(decoded_with "$mpq_dir/decode_$dset")" ] \
      || die "$fp32_dir/decode_$dset and $mpq_dir/decode_$dset were decoded with different LMs" \
        "($(decoded_with "$fp32_dir/decode_$dset") / $(decoded_with "$mpq_dir/decode_$dset")): run stages 9 and 11 again"
    python -m espnet_mpq.bin.score --ref "$dump/$dset/text" --hyp "fp32=$fp32_dir/decode_$dset/text" \
      --hyp "$tag=$mpq_dir/decode_$dset/text" --baseline fp32 --output_json "$mpq_dir/decode_$dset/score.json" \
      --errs_dir "$mpq_dir/decode_$dset/scoring"
  done
  log "Stage 12: done in $((SECONDS - t0)) s"
fi

if [ $stage -le 13 ] && [ $stop_stage -ge 13 ]; then
  log "Stage 13: packed export and report"; t0=$SECONDS
  for pair in "$fp32_dir/config.yaml:$fp32_model:$fp32_dir" "$mpq_train_config:$mpq_model:$mpq_dir"; do
    IFS=: read -r config model dir <<< "$pair"
    [ "$dir/size.json" -nt "$model" ] || python -m espnet_mpq.bin.export --asr_train_config "$config" \
      --asr_model_file "$model" --output "$dir/model.mpq" --output_bit_config "$dir/bits.yaml" \
      --output_report "$dir/size.json"
  done
  # shellcheck disable=SC2086
  python local/make_report.py --fp32_dir "$fp32_dir" --test_sets $test_sets --output "$exp/results.md" \
    --systems $(for d in "$exp"/asr_mpq_*/; do [ -f "$d/size.json" ] && echo "${d%/}"; done)
  log "Stage 13: done in $((SECONDS - t0)) s: $exp/results.md"
  cat "$exp/results.md"
fi
