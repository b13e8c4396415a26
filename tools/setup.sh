#!/usr/bin/env bash
# Creates .venv/ in the repository and installs espnet, s3prl, torch (CPU) and
# espnet_mpq into it; installs the Debian packages the recipe needs when missing.
#
# Usage: tools/setup.sh            # idempotent: a ready environment returns in ~1 s
#        PYTHON=python3.11 tools/setup.sh
#
# Every workaround for a dependency conflict lives here, each with the reason.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$repo/.venv
stamp=$venv/.espnet_mpq_setup_done
log() { echo "$(date '+%F %T') [setup] $*"; }

# The stamp records the inputs of this script: a changed script or setup.py re-runs it.
want=$(cat "$0" "$repo/setup.py" | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# --- System packages: audio synthesis and I/O, text for the built-in corpus, NIST scoring.
apt_pkgs=()
command -v espeak-ng >/dev/null || apt_pkgs+=(espeak-ng)
command -v sox >/dev/null || apt_pkgs+=(sox)
command -v flac >/dev/null || apt_pkgs+=(flac)
ldconfig -p 2>/dev/null | grep -q libsndfile.so || apt_pkgs+=(libsndfile1)
[ -d /usr/share/wordnet ] || apt_pkgs+=(wordnet-base)
[ -x /usr/lib/sctk/bin/sclite ] || apt_pkgs+=(sctk)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_pkgs[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
  else
    log "WARNING: cannot install ${apt_pkgs[*]} (not root or no apt-get)." \
        "The built-in corpus needs espeak-ng, sox, flac and wordnet-base; scoring falls back to Python without sctk."
  fi
fi

# --- Python environment.
[ -x "$venv/bin/python" ] || { log "creating $venv"; "${PYTHON:-python3}" -m venv "$venv"; }
# pip warns once per package about index folders of this machine's pip.conf that do not exist: drop that noise.
pip_install() {
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}
constraints=$repo/tools/constraints.txt

# torch 2.13.0 is pinned everywhere (-c): an unpinned resolution pulls a multi-GB CUDA build.
log "installing torch (CPU)"
pip_install -c "$constraints" torch

# espnet 202511 declares setuptools<74 while torch 2.13 needs setuptools>=77:
# install espnet, torchaudio and the s3prl fork without dependencies, then their
# requirements (tools/requirements.txt, the wheels' own lists less that pin) under the torch pin.
log "installing espnet, s3prl (espnet-s3prl) and their requirements"
pip_install -c "$constraints" --no-deps espnet torchaudio espnet-s3prl
pip_install -c "$constraints" -r "$repo/tools/requirements.txt"

# torchaudio 2.11 on the registry links CUDA libraries that the CPU torch lacks;
# without its compiled libraries it is pure Python, which is all espnet and s3prl use here.
ta_lib=$("$venv/bin/python" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchaudio")
print(pathlib.Path(spec.origin).parent / "lib")
EOF
)
rm -f "$ta_lib"/*.so

log "installing espnet_mpq (editable)"
pip_install --no-deps --no-build-isolation -e "$repo"

log "checking imports"
"$venv/bin/python" -c "import torch, torchaudio, espnet2.tasks.asr, s3prl.nn, espnet_mpq, jiwer, sentencepiece" 2>/dev/null
echo "$want" > "$stamp"
log "ready: $venv ($("$venv/bin/python" -c 'import torch, espnet; print("torch", torch.__version__, "espnet", espnet.__version__)'))"
