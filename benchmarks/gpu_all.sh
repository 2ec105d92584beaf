#!/usr/bin/env bash
# Every GPU figure of SPEC section 7 in one run, on the first GPU lent.
#
#   benchmarks/gpu_all.sh [OUT_DIR]       # default benchmarks/results/gpu
#
# Steps, most important first, each under its own timeout (seconds, below;
# STEP_TIMEOUT overrides them all), so one slow step cannot eat the others'
# time. STEPS="search_1m evaluate" runs a subset (default: steps 1-5, which
# fit one 10-minute device call; run STEPS=tests as a second call):
#   1. search_1m     exact top-100, 1,000 queries x 1M 64-bit codes (XLA engine;
#                    G pairs/s including top-k, target 500 G/s on an H100),
#                    checked against NumPy brute force on 16 queries;
#   2. evaluate      mAP@all 2,000 x 18,015, 64 bits, one direction (target
#                    0.02 s; the peers' formula timed beside it);
#   3. train_dcmh    the DCMH epoch, CNN-F 224, 10,000 items, batch 128 (target
#                    1.0 s against the PyTorch port's 7.99 s on an H100);
#   4. train_ssah    SSAH's epoch on the same data (target <= 2x DCMH's);
#   5. search_100m   the same search over 100M codes (800 MB), 1,000 queries,
#                    checked on 2 queries;
#   6. tests         the test suite with JAX's default platform set to the GPU
#                    (CROSSMODAL_HASH_TEST_PLATFORMS=cuda,cpu; tests that need 8
#                    devices still get 8 simulated CPU devices).
# Each step writes its JSON and log under OUT_DIR; summary.txt collects the
# device, every command, its exit status, time and the tail of its output.
#
# The GPU image has jax but not grain, array-record, ml-collections or
# portpicker, and no network: they are installed first from WHEELHOUSE
# (default: the repository's ignored .whl/ folder), made on a networked
# machine with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 -d .whl \
#     grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 portpicker
# and carried to the GPU machine with the working tree.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}

wheelhouse=${WHEELHOUSE:-.whl}
if ! python -c 'import grain, array_record, ml_collections, portpicker' \
    2>/dev/null; then
  if [[ -d "$wheelhouse" ]]; then
    python -m pip install -q --no-index --no-deps --find-links "$wheelhouse" \
      grain array-record ml-collections portpicker 2>&1 | tail -n 3 \
      | tee -a "$summary"
  else
    echo "grain, array-record, ml-collections or portpicker missing and no" \
      "wheel folder $wheelhouse: steps that import them will fail" \
      | tee -a "$summary"
  fi
fi

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    2>&1 || true
  python -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1
} | tee -a "$summary"

steps=" ${STEPS:-search_1m evaluate train_dcmh train_ssah search_100m} "

step() {
  local name=$1 limit=$2
  shift 2
  [[ "$steps" == *" $name "* ]] || return 0
  echo "== $name: $*" | tee -a "$summary"
  local start=$SECONDS
  timeout "${STEP_TIMEOUT:-$limit}" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "-- $name: exit $rc after $((SECONDS - start)) s" | tee -a "$summary"
  tail -n 14 "$out/$name.log" >> "$summary"
}

step search_1m 90 python benchmarks/hamming_search.py --mode=gpu \
  --num_db=1000000 --bits=64 --out="$out/hamming_search_1m.json"
step evaluate 90 python benchmarks/evaluate.py --peer_repeats=1 \
  --out="$out/evaluate.json"
step train_dcmh 150 python benchmarks/train_speed.py --methods=dcmh \
  --out="$out/train_speed_dcmh.json"
step train_ssah 150 python benchmarks/train_speed.py --methods=ssah \
  --out="$out/train_speed_ssah.json"
step search_100m 120 python benchmarks/hamming_search.py --mode=gpu \
  --num_db=100000000 --bits=64 --repeats=2 --check_queries=2 \
  --out="$out/hamming_search_100m.json"
step tests 580 env CROSSMODAL_HASH_TEST_PLATFORMS=cuda,cpu \
  python -m pytest -q -p no:cacheprovider tests
echo "done; figures in $out" | tee -a "$summary"
