#!/usr/bin/env bash
# The prepared runs for a lent CUDA machine (bare, offline; see bench/device_setup.sh),
# each leaving its results in $OUT (the device tool's output folder; else bench/results/device):
#
#   bench/device_run.sh check [--budget S]   # issue 10: bench/device_check.sh (step, memory,
#       ESPnet AMP training of every quantizer) -> device_check.txt
#   bench/device_run.sh reference [run.sh options]   # issue 11: the GPU-scaled 32-bit reference
#       (config set gpu: stages 1-9, HuBERT pre-training included) -> reference_gpu.json,
#       reference_gpu.log, reference_gpu_logs.tar.gz (every train.log, score.json)
#
# Each part sets the machine up first (about 30 s; seconds once done). On an H200 the check
# takes about 8 minutes at its default budget and the reference about 10 (577 s of stages
# 1-9 on 2026-11-27): one part per session of 15 device minutes. The reference outlasts one
# call's 600 s with the setup: give the first call a limit near 590 s and, on the still warm
# machine, call again with the same options and --stage N of the stage it was cut in (run.sh
# resumes from its .done markers and ESPnet's checkpoints). (A first version ran the reference's first stages in the
# background of the check; the device tool's call then lasted until that job ended.)
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
    budget=450
    [ "${1:-}" != --budget ] || budget=$2
    bash "$root/bench/device_check.sh" --budget "$budget" --out "$out/device_check.txt"
    ;;
  reference)
    t0=$SECONDS
    set +e
    # The log is appended in the work directory, which a warm machine keeps from call to call:
    # a run cut by the call's time limit resumes in the next call, and $out gets every call's log.
    mkdir -p "$gpu_work"
    (cd "$recipe" && ./run.sh --config_set gpu --ngpu 1 --nj 16 --stop_stage 9 "$@") 2>&1 | tee -a "$gpu_work/reference_gpu.log"
    rc=${PIPESTATUS[0]}
    set -e
    log "run.sh stages 1-9: status $rc in $((SECONDS - t0)) s" | tee -a "$gpu_work/reference_gpu.log"
    cp "$gpu_work/reference_gpu.log" "$out/reference_gpu.log"
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
