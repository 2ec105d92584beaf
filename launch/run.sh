#!/usr/bin/env bash
# Local run (CPU or the machine's accelerators): launch/run.sh CONFIG WORKDIR [flags]
set -euo pipefail
config=${1:?config}; workdir=${2:?workdir}; shift 2
cd "$(dirname "$0")/.."
exec python -m crossmodal_hash.main --config="$config" --workdir="$workdir" "$@"
