#!/usr/bin/env bash
# The test command (README): the whole suite, offline, on the bundled model and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q --durations=15 "$@"
