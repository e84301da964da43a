#!/usr/bin/env bash
# Set up .venv if needed and run the whole test suite (includes the real-size vith14 export).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not realsize" for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
