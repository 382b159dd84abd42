#!/usr/bin/env bash
# Create or update the project's virtual environment, idempotently.
#
# - Installs a CPU build of torch first (TOKENLEAN_TORCH_SPEC overrides the pip spec, default
#   "torch==2.13.0"), so that sentence-transformers does not pull a multi-GB CUDA build.
# - Then installs tokenlean in editable mode with every extra and the dev tools.
# - Records a stamp of everything that shapes the environment; when nothing changed, a second run
#   returns in well under a second.
#
# Environment: PYTHON (interpreter, default python3), TOKENLEAN_VENV (default .venv),
# TOKENLEAN_TORCH_SPEC (default torch==2.13.0; set to "" to skip installing torch).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_bin=${PYTHON:-python3}
venv=${TOKENLEAN_VENV:-.venv}
torch_spec=${TOKENLEAN_TORCH_SPEC-torch==2.13.0}

if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "bootstrap: tokenlean needs Python >= 3.10 (PYTHON=$python_bin)" >&2
  exit 1
fi

stamp_file="$venv/.tokenlean-bootstrap"
# Everything that decides what gets installed goes into the stamp.
want=$(
  {
    "$python_bin" -c 'import sys; print(sys.version)'
    echo "torch:$torch_spec"
    cat pyproject.toml scripts/bootstrap.sh
    for f in integrations/*/pyproject.toml; do
      if [ -f "$f" ]; then cat "$f"; fi
    done
  } | sha256sum | cut -d' ' -f1
)

if [ -x "$venv/bin/python" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ]; then
  exit 0
fi

echo "bootstrap: setting up $venv (first run or dependencies changed)" >&2
[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

if [ -n "$torch_spec" ]; then
  "${pip[@]}" install --quiet "$torch_spec"
fi

editables=(-e ".[all,dev]")
for d in integrations/*/; do
  # Each adapter with its test extra (its framework's standard test suites).
  if [ -f "$d/pyproject.toml" ]; then editables+=(-e "${d%/}[test]"); fi
done
"${pip[@]}" install --quiet "${editables[@]}"

echo "$want" > "$stamp_file"
echo "bootstrap: $venv is ready" >&2
