#!/usr/bin/env bash
# GPU training, one host or several.
#
# One host, all its GPUs (one process drives them all):
#   launch/gpu.sh CONFIG WORKDIR [extra flags...]
# Several hosts: run the same command on every host with these set (or under
# SLURM, where jax.distributed.initialize() reads them from the environment):
#   COORDINATOR=host0:1234 NUM_PROCESSES=4 PROCESS_ID=<0..3> launch/gpu.sh ...
set -euo pipefail
config=${1:?config}; workdir=${2:?workdir}; shift 2
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
if [[ -n "${COORDINATOR:-}" ]]; then
  exec python -m crossmodal_hash.main --multiprocess \
    --coordinator_address="$COORDINATOR" \
    --num_processes="${NUM_PROCESSES:?NUM_PROCESSES}" \
    --process_id="${PROCESS_ID:?PROCESS_ID}" \
    --config="$config" --workdir="$workdir" "$@"
fi
exec python -m crossmodal_hash.main --config="$config" --workdir="$workdir" "$@"
