#!/usr/bin/env bash
# Device check of the supernet's cost (issue 10): step time and peak memory of the
# quantizer on a CUDA GPU, and ESPnet training of the recipe's model with AMP for every
# quantizer, all written to one results file. Planned to finish in under 8 minutes on
# one H100: each command runs only if its minimum time is left, and is cut at its share of the
# budget (stage 1 a sixth, stage 2 a half, stage 3 and 4 the rest; the shares are sized
# from the H200 run of 2026-11-27, where stage 1 took 67 s with the compiled and unfused
# modes, stage 2 110 s in fp32 for two modes, stage 3 175 s); what was skipped or cut is logged.
#
#   bench/device_check.sh                                  # CUDA machine -> bench/results/device_check.txt
#   bench/device_check.sh --cpu                            # the same steps on the CPU, small sizes
#   bench/device_check.sh --out /tmp/x.txt --budget 600    # another results file / time budget (s)
#
# Stages:
#   1 step cost, 4 x wav2vec2-base layers (bench/step_overhead.py), eager, every strategy
#     (broadcast, the GPU's default; loop; grouped; the Triton kernel, layer by layer and under
#     grouped: true): fp32, then bf16 autocast
#   2 step cost and peak memory (torch.cuda.max_memory_allocated) at wav2vec2-base and
#     HuBERT-large sizes (bench/real_shapes.py --no_accounting), batches 1 x 2 s and 4 x 4 s,
#     eager, fp32: the default (broadcast) and the Triton kernel, layer by layer and grouped; then the
#     4 x 4 s batch under bf16 autocast (grouped without the kernel is timed in stage 1 only)
#   3 ESPnet: the recipe (config set smoke, built-in corpus, no HuBERT pre-training) trains
#     the 32-bit model, then one compression run (stage 10) per quantizer: joint, two_stage
#     (the searching ones first), uniform, ptq, none, with --ngpu 1, use_amp=true and the
#     Triton kernel (ESPNET_MPQ_TRITON=1; the broadcast ran this stage on 2026-11-27)
#   4 the compiled quantizer at the published sizes (fp32), with what time is left
# --cpu runs every stage on the CPU at small sizes (1 layer, tiny batches, wav2vec2-base
# only, quantizer eager only, no AMP in ESPnet: its AMP is CUDA-only); it tests the
# script, its figures mean little (tests/test_fused.py covers the compiled quantizer).
set -euo pipefail

log() { echo "$(date '+%F %T') (${0##*/}) $*" | tee -a "$out"; }
die() { echo "$(date '+%F %T') (${0##*/}) error: $*" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
cpu=false
out=$root/bench/results/device_check.txt
budget=450   # seconds for stages 1-4; with start-up and logging the script stays within 8 minutes
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) cpu=true; shift ;;
    --out) out=$(realpath -m "$2"); shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $budget =~ ^[0-9]+$ ]] || die "--budget $budget: must be a whole number of seconds"
python=$root/.venv/bin/python
[ -x "$python" ] || python=python
cd "$root"
mkdir -p "$(dirname "$out")"
: > "$out"
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }
# run LABEL NEED CAP COMMAND...: run it if NEED seconds are left, for at most CAP seconds (and
# never past the budget), its output into $out.
run() {
  local label=$1 need=$2 cap=$3; shift 3
  local limit; limit=$(left)
  if [ "$limit" -lt "$need" ]; then log "skipped: $label ($limit s left, needs about $need s)"; return 0; fi
  [ "$limit" -le "$cap" ] || limit=$cap
  log "$label (at most $limit s): $*"
  if timeout "$limit" "$@" >> "$out" 2>&1; then log "$label: done at $((SECONDS - start)) s"
  else log "$label: FAILED or cut (status $?) at $((SECONDS - start)) s"; fi
}

if $cpu; then
  device=cpu; ngpu=0; amp_train=false
  step_args=(--device cpu --layers 1 --batch 1 --frames 50 --repeats 1 --no_unfused --no_compile)
  shape_args=(--device cpu --models wav2vec2_base --batches 1x0.25 --repeats 1 --no_accounting)
  compile=(); big_batch=1x0.25; triton=()
else
  command -v nvidia-smi > /dev/null || die "no nvidia-smi: run on a CUDA machine, or pass --cpu"
  device=cuda; ngpu=1; amp_train=true
  step_args=(--device cuda --repeats 5)
  shape_args=(--device cuda --batches 1x2 4x4 --repeats 3 --no_accounting)
  compile=(--compile); big_batch=4x4; triton=(--triton)
fi

log "device check of issue 10 on $device, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- espnet_mpq bench || echo ' (+ local changes)'), budget $budget s"
$python -c 'import importlib.metadata as m, importlib.util, torch, platform; print("torch", torch.__version__, "| cuda", torch.version.cuda,
  "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU", "|", platform.processor(),
  "| triton", m.version("triton") if importlib.util.find_spec("triton") else "not installed")' >> "$out" 2>&1
[ "$device" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$out" 2>&1

log "Stage 1: step cost, 4 x wav2vec2-base layers"
run "step, fp32" 30 $((budget * 12 / 100)) $python bench/step_overhead.py "${step_args[@]}" --amp none \
  --no_compile --no_unfused
run "step, bf16 autocast" 20 $((budget * 5 / 100)) $python bench/step_overhead.py "${step_args[@]}" --amp bf16 \
  --no_compile --no_unfused

log "Stage 2: step cost and peak memory at the published sizes"
run "real shapes, fp32" 60 $((budget * 38 / 100)) $python bench/real_shapes.py "${shape_args[@]}" "${triton[@]}"
run "real shapes, bf16" 20 $((budget * 10 / 100)) $python bench/real_shapes.py "${shape_args[@]}" "${triton[@]}" \
  --batches "$big_batch" --amp bf16

# The default broadcast ran stage 3 on an H200 (2026-11-27); this stage now runs the Triton kernel.
[ "$device" = cpu ] || export ESPNET_MPQ_TRITON=1
log "Stage 3: ESPnet training with --ngpu $ngpu, use_amp=$amp_train, every quantizer, ESPNET_MPQ_TRITON=${ESPNET_MPQ_TRITON:-0}"
work=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
# The smoke config set's training overrides, plus AMP.
overrides="$(set +u; . egs/librispeech/conf/sets/smoke.sh; echo "$train_overrides") use_amp=$amp_train"
recipe=(egs/librispeech/run.sh --config_set smoke --work "$work" --ngpu "$ngpu" --pretrain false
        --train_overrides "$overrides")
run "recipe stages 1-8 (data, 32-bit training)" 60 "$budget" "${recipe[@]}" --stop_stage 8
for quantizer in joint_3.0bit two_stage_3.0bit uniform_4bit ptq_4bit none; do
  run "compression, $quantizer" 20 "$budget" "${recipe[@]}" --stage 10 --stop_stage 10 \
    --mpq_config "conf/tuning/train_mpq_$quantizer.yaml"
  tail -n 3 "$work/exp/asr_mpq_$quantizer/train.log" >> "$out" 2>/dev/null || true
done
rm -rf "$work"
unset ESPNET_MPQ_TRITON

if [ ${#compile[@]} -gt 0 ]; then
  log "Stage 4: the compiled quantizer at the published sizes"
  run "real shapes, compiled" 60 "$budget" $python bench/real_shapes.py "${shape_args[@]}" --only_compiled
fi
log "finished in $((SECONDS - start)) s; results in $out"
