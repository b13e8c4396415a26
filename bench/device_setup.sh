#!/usr/bin/env bash
# Makes a bare, offline CUDA machine (one whose python3 already holds torch and torchaudio)
# ready for bench/device_check.sh and the recipe, from files carried beside the checkout:
#   .whl/  py3.12 wheels of what the machine lacks (espnet, espnet-s3prl, jiwer, ... ;
#          bench/device_setup.sh --download fills it on a machine with a package registry)
#   .deb/  Debian packages of espeak-ng, sox and wordnet-base with their libraries
#          (--download fills it with apt-get download)
# It installs the wheels into $DEVICE_PREFIX/site (default /tmp/device), unpacks the
# packages under $DEVICE_PREFIX/root (never into /), puts wrappers for espeak-ng and sox on
# PATH that see the unpacked libraries (nothing else does: the machine's own libraries stay
# in force for python), and writes .venv/bin/activate so that the recipe's path.sh finds it.
# Source nothing: run it, then run the recipe or bench/device_check.sh as usual.
#
#   bench/device_setup.sh --download    # here: fill .whl/ and .deb/ (needs pip and apt-get)
#   bench/device_setup.sh               # there: install (about 30 s)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${DEVICE_PREFIX:-/tmp/device}
log() { echo "$(date '+%F %T') (${0##*/}) $*"; }

wheels=(annotated-types==0.8.0 asteroid-filterbanks==0.4.0 audioread==3.1.0 cffi==2.1.1
  ConfigArgParse==1.9.0 decorator==5.3.1 defusedxml==0.7.1 editdistance==0.8.1 espnet==202511
  espnet-g2p-en==2.1.0.post1 espnet-s3prl==2026.5.14 espnet_tts_frontend==0.0.4 humanfriendly==10.0
  hydra-core==1.3.8 importlib-metadata==4.13.0 inflect==7.6.0 jaconv==0.5.0 jamo==0.4.1
  jaraco.functools==4.6.0 jiwer==4.0.0 kaldiio==2.18.1 librosa==0.11.0 more-itertools==11.2.1
  nltk==3.10.4 omegaconf==2.3.1 platformdirs==4.14.8 pooch==1.9.0 pycparser==3.12 pydantic==2.14.4
  pydantic_core==2.50.5 pypinyin==0.44.0 RapidFuzz==3.14.6 soundfile==0.14.0 soxr==1.1.0
  torch-complex==0.4.4 typeguard==4.6.1 typing-inspection==0.4.5 Unidecode==1.4.0)
sdists=(antlr4-python3-runtime==4.9.3 ci_sdr==0.0.2 Distance==0.1.3 fast_bss_eval==0.1.3)
debs=(espeak-ng espeak-ng-data libespeak-ng1 libpcaudio0 libsonic0 sox libsox3 libsox-fmt-base
  libltdl7 libpng16-16 libmagic1 libmagic-mgc libgsm1 libgomp1 libflac12 libogg0 libvorbis0a
  libvorbisenc2 libvorbisfile3 libopus0 libsndfile1 libwavpack1 libmp3lame0 libmpg123-0 libasound2
  libasound2-data libpulse0 libasyncns0 libdbus-1-3 libsystemd0 libx11-6 libx11-xcb1 libxcb1 libxau6
  libxdmcp6 libx11-data libbsd0 libmd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1 libzstd1 liblzma5
  libbz2-1.0 libopencore-amrnb0 libopencore-amrwb0 libao4 libelogind0 wordnet-base)

if [ "${1:-}" = --download ]; then
  mkdir -p "$root/.whl" "$root/.deb"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$root/.whl" "${wheels[@]}"
  python3 -m pip wheel -q --no-deps -w "$root/.whl" "${sdists[@]}"   # pure Python, sdist only
  (cd "$root/.deb" && apt-get download "${debs[@]}")
  log "downloaded: $(du -sh "$root/.whl" | cut -f1) of wheels, $(du -sh "$root/.deb" | cut -f1) of packages"
  exit 0
fi

[ -d "$root/.whl" ] && [ -d "$root/.deb" ] || { echo "no .whl/ or .deb/: run $0 --download where pip works" >&2; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$prefix/site" \
  "$root"/.whl/*.whl
mkdir -p "$prefix/root" "$prefix/bin"
for f in "$root"/.deb/*.deb; do dpkg -x "$f" "$prefix/root"; done
libs=$prefix/root/usr/lib/x86_64-linux-gnu:$prefix/root/usr/lib/x86_64-linux-gnu/pulseaudio:$prefix/root/lib/x86_64-linux-gnu
# sox finds its format modules (flac among them) only where it was built to, and the corpus
# synthesizer reads WordNet from its Debian place: links there, where nothing is yet.
[ -e /usr/lib/x86_64-linux-gnu/sox ] || ln -s "$prefix/root/usr/lib/x86_64-linux-gnu/sox" /usr/lib/x86_64-linux-gnu/sox
[ -e /usr/share/wordnet ] || ln -s "$prefix/root/usr/share/wordnet" /usr/share/wordnet
for tool in espeak-ng sox; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s ESPEAK_DATA_PATH=%s exec %s "$@"\n' \
    "$libs" "$prefix/root/usr/lib/x86_64-linux-gnu" "$prefix/root/usr/bin/$tool" > "$prefix/bin/$tool"
done
# python: the machine's python3 (a venv of its own: exec'd, not linked, so it keeps its packages).
mkdir -p "$root/.venv/bin"
printf '#!/bin/sh\nexport PYTHONPATH=%s\nexec %s "$@"\n' "$root:$prefix/site" "$(command -v python3)" \
  | tee "$prefix/bin/python" > "$root/.venv/bin/python"
chmod +x "$prefix"/bin/* "$root/.venv/bin/python"
printf 'export PATH=%s:$PATH\n' "$prefix/bin" > "$root/.venv/bin/activate"
. "$root/.venv/bin/activate"
echo "hello" | espeak-ng --stdout | sox -t wav - -t flac -r 16000 "$prefix/check.flac"
python -c "import torch, espnet2.tasks.asr, s3prl.nn, jiwer, espnet_mpq; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 | tail -1
log "ready: .venv/bin/activate; wordnet at $prefix/root/usr/share/wordnet"
