#!/usr/bin/env bash
# Installs everything, then starts callplane with its embedded defaults (flags pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh server
exec .venv/bin/callplane serve "$@"
