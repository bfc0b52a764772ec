#!/usr/bin/env bash
# Installs everything, then runs the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy"
.venv/bin/mypy
.venv/bin/mypy --strict src/callplane/client
echo "== pytest"
exec .venv/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@"
