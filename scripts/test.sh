#!/usr/bin/env bash
# Set up .venv if needed, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ci_system_deps.sh   # headless Chromium for the web page test (apt)
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/python -m pytest -q --durations=10 "$@"
