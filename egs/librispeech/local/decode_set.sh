#!/usr/bin/env bash
# Decodes one data directory with JOBS one-thread jobs, its utterances dealt round-robin:
#   local/decode_set.sh DATA_DIR OUT_DIR JOBS ASR_INFERENCE_OPTION...
# (in the recipe directory) -> OUT_DIR/text, every utterance of DATA_DIR/wav.scp sorted by key,
# and OUT_DIR/.done; job J logs to OUT_DIR/log/decode.J.log. OUT_DIR is emptied first. Jobs start
# through $decode_cmd (cmd.sh; default utils/run_local.sh). Exits 1 after every job has ended
# when one failed or an utterance has no hypothesis. If DECODING_TXT is set, its value is written
# to OUT_DIR/decoding.txt before OUT_DIR/.done (run.sh records the LM there).
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,7p "$0" >&2; exit 1; }
data=$1 out=$2 jobs=$3
shift 3
decode_cmd=${decode_cmd:-utils/run_local.sh}
[ -s "$data/wav.scp" ] || { echo "$0: $data/wav.scp is missing or empty" >&2; exit 1; }
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "$0: JOBS must be a positive integer, got '$jobs'" >&2; exit 1; }
n=$(wc -l < "$data/wav.scp")
jobs=$(( jobs < n ? jobs : n ))
rm -rf "$out"; mkdir -p "$out/log"
awk -v n="$jobs" -v d="$out" '{ print $1 > (d "/keys." ((NR - 1) % n + 1)) }' "$data/wav.scp"
pids=()
for j in $(seq "$jobs"); do
  # One thread a job (JOBS sets the parallelism): 2 jobs x 2 threads on 2 cores ran 3-15x slower.
  OMP_NUM_THREADS=1 $decode_cmd "$out/log/decode.$j.log" python -m espnet_mpq.bin.asr_inference "$@" \
    --data_path_and_name_and_type "$data/wav.scp,speech,sound" --key_file "$out/keys.$j" \
    --output_dir "$out/output.$j" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done  # every job ends before we fail
[ "$failed" -eq 0 ] || { echo "$0: decoding $data failed, see $out/log/" >&2; exit 1; }
cat "$out"/output.*/1best_recog/text 2>/dev/null | sort > "$out/.text.tmp" || true
got=$(wc -l < "$out/.text.tmp")
[ "$got" -eq "$n" ] || { echo "$0: $got of $n utterances of $data decoded, see $out/log/" >&2; exit 1; }
mv "$out/.text.tmp" "$out/text"
[ -z "${DECODING_TXT:-}" ] || printf '%s\n' "$DECODING_TXT" > "$out/decoding.txt"
touch "$out/.done"
