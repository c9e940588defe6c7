#!/usr/bin/env bash
# The side-by-side benchmark on a CUDA machine, in one call:
#
#   bash bench/gpu.sh [--quick | --long] [--repeats N]     # any `python -m bench` option passes through
#
# Both sides on DEVICE=cuda with float16, and Whisper large-v3 for both when it is in the model
# cache (.cache/huggingface, `hf download Systran/faster-whisper-large-v3`), else the packaged tiny.en.
# The batch size is the pipeline's hardware policy for the GPU (WhisperX gets the same).
# Writes bench/report.gpu.json (REPORT=... to change it) and works in /tmp/filmsubs-bench-gpu (WORK=...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "no .venv here: run bash scripts/setup.sh first" >&2
    exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA GPU visible to torch on this machine; run python -m bench for the CPU figures" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
MODEL=packaged
if "$PY" - <<'EOF' 2>/dev/null; then
from pathlib import Path

from settings.model import load_settings
from tasks.whisper_models import resolve_model

resolve_model("large-v3", "cuda", Path(load_settings().cache_root), "ASR__MODEL")
EOF
    MODEL=large-v3
fi
echo "bench/gpu.sh: model $MODEL on cuda, float16" >&2
exec "$PY" -m bench --device cuda --compute-type float16 --model "$MODEL" \
    --report "${REPORT:-bench/report.gpu.json}" --work "${WORK:-/tmp/filmsubs-bench-gpu}" "$@"
