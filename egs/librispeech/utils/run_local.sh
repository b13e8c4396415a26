#!/usr/bin/env bash
# Runs one job here: utils/run_local.sh LOG command args...
# The command's stdout and stderr are appended to LOG (the command line and exit status too),
# so a resumed job keeps the log of its earlier runs; on failure the end of LOG is shown.
# cmd.sh shows how to run jobs through Slurm instead.
set -uo pipefail
log=$1; shift
mkdir -p "$(dirname "$log")"
{ echo "# $*"; echo "# started $(date '+%F %T') on $(hostname)"; } >> "$log"
"$@" >> "$log" 2>&1
rc=$?
echo "# ended $(date '+%F %T') with status $rc" >> "$log"
if [ $rc -ne 0 ]; then
  echo "$0: job failed (status $rc), see $log; its end:" >&2
  tail -n 20 "$log" >&2
fi
exit $rc
