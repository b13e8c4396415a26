#!/usr/bin/env bash
# The prepared runs for a lent CUDA machine (bare, offline; see bench/device_setup.sh),
# each leaving its results in --out (default: $OUT, else bench/results/device):
#
#   bench/device_run.sh check [--budget S]   # issue 10: bench/device_check.sh (step, memory,
#       ESPnet AMP training of every quantizer) -> device_check.txt. Beside it, in the
#       background (its own process session, so it outlives this call while the machine
#       stays warm), the GPU reference's stages 1-5 (synthesis, data, tokens) run at once and
#       its stage 6 (units, pre-training) once the check's timed stages are over; `reference`
#       then finds them done.
#   bench/device_run.sh reference [run.sh options]   # issue 11: the GPU-scaled 32-bit reference
#       (config set gpu: stages 1-9, HuBERT pre-training included) -> reference_gpu.json,
#       reference_gpu.log, reference_gpu_logs.tar.gz (every train.log, score.json)
#
# Each part sets the machine up first (a few seconds once done). The background stages 1-5
# are CPU work beside the check's step timings (16 cores; the check's ratios are measured
# side by side, so both modes see the same load); pre-training shares the GPU only with the
# check's untimed ESPnet runs, and its wall time (pretrain_s) includes that sharing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
part=${1:-}; shift || true
out=${OUT:-$root/bench/results/device}
mkdir -p "$out"
log() { echo "$(date '+%F %T') (${0##*/}) $*"; }
recipe=$root/egs/librispeech
gpu_work=$recipe/gpu    # conf/sets/gpu.sh's work directory

[ -f "$root/.venv/bin/activate" ] || bash "$root/bench/device_setup.sh"

case $part in
  check)
    budget=360
    [ "${1:-}" != --budget ] || budget=$2
    # The reference's CPU stages (1-5) at once; its stage 6 (k-means units, then HuBERT
    # pre-training on the GPU) only once the check's timed stages 1-2 are over.
    (cd "$recipe" && setsid nohup bash -c "./run.sh --config_set gpu --ngpu 1 --nj 8 --stop_stage 5 &&
      until grep -q 'Stage 3:' '$out/device_check.txt' 2>/dev/null || ! pgrep -f '[d]evice_check.sh' > /dev/null; do sleep 2; done &&
      ./run.sh --config_set gpu --ngpu 1 --nj 8 --stage 6 --stop_stage 6" > "$root/.gpu_data.log" 2>&1 < /dev/null &)
    log "GPU reference stages 1-6 started in the background (log: .gpu_data.log)"
    bash "$root/bench/device_check.sh" --budget "$budget" --out "$out/device_check.txt" || true
    cp "$root/.gpu_data.log" "$out/reference_gpu_stages1-6.log" || true
    tail -n 4 "$root/.gpu_data.log" || true
    ;;
  reference)
    # The data stages from `check`, if still running, finish first (run.sh's stages skip done work).
    while pgrep -f "run.sh --config_set gpu" > /dev/null; do sleep 2; done
    cp "$root/.gpu_data.log" "$out/reference_gpu_stages1-6.log" 2>/dev/null || true
    t0=$SECONDS
    set +e
    (cd "$recipe" && ./run.sh --config_set gpu --ngpu 1 --nj 16 --stop_stage 9 "$@") 2>&1 | tee "$out/reference_gpu.log"
    rc=${PIPESTATUS[0]}
    set -e
    log "run.sh stages 1-9: status $rc in $((SECONDS - t0)) s"
    (cd "$recipe" && . ./path.sh && python local/reference_results.py collect --exp gpu/exp --upstream ssl \
      --test_clean test_synth --test_other test_other_synth \
      --conditions "config set gpu, run.sh options: ${*:-none}; bench/device_run.sh reference" \
      --output "$out/reference_gpu.json") || true
    (cd "$gpu_work" && find exp -name train.log -o -name score.json -o -name config.yaml -o -name pretrain_time.json \
      | tar czf "$out/reference_gpu_logs.tar.gz" -T -) || true
    exit "$rc"
    ;;
  *) echo "usage: $0 check [--budget S] | reference [run.sh options]" >&2; exit 2 ;;
esac
