#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by run.sh after it sets its defaults:
#   --name value   sets $name (which must already be defined); dashes in name become underscores
#   --help / -h    prints $help_message and exits
# Arguments that are not options are left in "$@".
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "$help_message"; exit 0 ;;
    --*=*) echo "$0: use '--name value', not '$1'" >&2; exit 1 ;;
    --*)
      name=$(echo "${1#--}" | tr - _)
      if [ -z "${!name+set}" ]; then echo "$0: unknown option $1 (try --help)" >&2; exit 1; fi
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      printf -v "$name" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done
