#!/usr/bin/env bash
# Cloud TPU VM: create a VM, copy this repository to every worker, install, run.
#
#   launch/tpu_vm.sh create  NAME ZONE ACCELERATOR   # e.g. v5litepod-16
#   launch/tpu_vm.sh copy    NAME ZONE
#   launch/tpu_vm.sh install NAME ZONE
#   launch/tpu_vm.sh run     NAME ZONE CONFIG WORKDIR [extra flags...]
#
# `run` starts the same command on --worker=all; main.py's --multiprocess calls
# jax.distributed.initialize(), which discovers the pod's workers by itself.
# WORKDIR must be a directory every worker sees: a gs:// URL (every file of a
# run goes through etils.epath) or a shared file system.
set -euo pipefail
cmd=${1:?command}; name=${2:?name}; zone=${3:?zone}; shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
case "$cmd" in
  create)
    accel=${1:?accelerator type}
    gcloud compute tpus tpu-vm create "$name" --zone="$zone" \
      --accelerator-type="$accel" --version=tpu-ubuntu2204-base ;;
  copy)
    tar -C "$repo" --exclude=.git --exclude='.venv*' -czf /tmp/crossmodal_hash.tgz .
    gcloud compute tpus tpu-vm scp /tmp/crossmodal_hash.tgz "$name":~ \
      --zone="$zone" --worker=all
    gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all \
      --command='mkdir -p ~/crossmodal_hash && tar -C ~/crossmodal_hash -xzf ~/crossmodal_hash.tgz' ;;
  install)
    gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all \
      --command='cd ~/crossmodal_hash && python3 -m venv ~/venv && . ~/venv/bin/activate && pip install -U "jax[tpu]" && pip install -e ".[gcs]"' ;;
  run)
    config=${1:?config}; workdir=${2:?workdir}; shift 2
    gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all \
      --command="cd ~/crossmodal_hash && . ~/venv/bin/activate && python -m crossmodal_hash.main --multiprocess --config=$config --workdir=$workdir $*" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
