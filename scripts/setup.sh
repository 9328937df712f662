#!/usr/bin/env bash
# One-time environment set-up used by `make demo` and `make test`.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-test,serve}

# 1. System tools for synthetic speech and audio processing (only where we can install them).
need=()
for b in espeak-ng sox flite text2wave ffmpeg; do command -v "$b" >/dev/null 2>&1 || need+=("$b"); done
[ -d /usr/share/pocketsphinx/test/data ] || need+=(pocketsphinx-testdata)  # real read speech for ASR tests
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing system packages (missing: ${need[*]})"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox libsox-fmt-all flite festival \
      festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts ffmpeg pocketsphinx-testdata >/dev/null
  else
    echo "[setup] WARNING: missing ${need[*]}; install them (e.g. apt-get install espeak-ng sox flite festival ffmpeg)." >&2
  fi
fi

# 1b. A headless browser for the /demo page test (optional: the test skips, with the reason, without one).
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium + chromium-driver (browser test of the demo page)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null \
      || echo "[setup] WARNING: chromium could not be installed; the browser test will be skipped" >&2
  else
    echo "[setup] note: no chromium/chromedriver; the demo page's browser test will be skipped" >&2
  fi
fi

# 2. Virtual environment, torch first (CPU wheel without a GPU), then the project.
# Disk first: a full disk otherwise surfaces as pip's "[Errno 28] No space left on device" halfway
# through. A fresh environment takes about 3.3 GB (torch 0.75, triton 1.0 via openai-whisper, the rest 1.5).
has_torch=0
"$VENV/bin/python" -c "import torch" >/dev/null 2>&1 && has_torch=1
if [ ! -f "$VENV/.speechllm-installed" ]; then
  mkdir -p "$VENV"
  need_mb=$((has_torch ? 2500 : 3500))
  free_mb=$(df -Pm "$VENV" | awk 'NR==2 {print $4}')
  if [ "${free_mb:-0}" -lt "$need_mb" ]; then
    echo "[setup] ERROR: $free_mb MB free on the disk of $VENV; the environment needs about $need_mb MB." \
      "Free some space, or put the environment on another disk: make VENV=/path/with/space test" >&2
    exit 1
  fi
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# --no-cache-dir: the wheels are installed once; a cache copy only doubles the disk they need
PIP="$VENV/bin/python -m pip --no-cache-dir"
if [ "$has_torch" = 0 ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] GPU found: installing the default torch build"
    $PIP install -q "torch>=2.4"
  else
    echo "[setup] no GPU: installing the CPU torch wheel"
    $PIP install -q "torch==2.13.0+cpu" || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
$PIP install -q -e ".[$EXTRAS]"
echo "[setup] environment ready in $VENV"
