#!/usr/bin/env bash
# Create .venv (Python >= 3.10) and install ijepa-deploy with its export and test extras.
# torch is pinned to 2.13.0 (constraints.txt): any other spec pulls the multi-GB CUDA build.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$VENV/.ijepa-deploy-installed"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[export,test]"
  echo "$want" > "$stamp"
fi
