#!/usr/bin/env bash
# GPU check: the paper's whole sampling protocol through the library (issue 4's target), tests on
# the GPU, then sampling and training at the paper's scale (13,500 rows, T = 1000, M = 3 models of
# hidden 512 x 5 layers; issue 7). Needs no network.
# Written for the lent machines of /work/.library/device (one H100/H200, jax with CUDA, tqdm and
# pyarrow present; mudata and scikit-survival absent: the tests that need them are not run).
# Budget: under 8 minutes with compiles (each step's timeout sums to 11); every step has its own timeout and a failed step does not stop the rest.
#
#   bash experiments/gpu_check.sh            # writes $OUT (default ./gpu_check_out)/summary.md
#   SMOKE=1 bash experiments/gpu_check.sh    # tiny sizes, a few minutes on a CPU: checks the script
set -u
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SUMMARY=$OUT/summary.md
status=()

step() {  # step NAME SECONDS CMD...: run with a timeout, log to $OUT/NAME.log, record the exit code
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  status+=("| $name | $rc | $(( $(date +%s) - t0 )) s |")
  echo "[$name] rc=$rc ($(( $(date +%s) - t0 )) s)"
}

{
  echo "# gpu_check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())"
  $PY - <<'PY'
import importlib
for m in ("flax", "optax", "orbax.checkpoint", "chex", "pandas", "sklearn", "pyarrow", "tqdm", "mudata", "sksurv", "torch"):
    try:
        importlib.import_module(m); print(f"  {m}: ok")
    except Exception as e:
        print(f"  {m}: MISSING ({type(e).__name__})")
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "${SMOKE:-0}" = 1 ]; then  # the same steps at tiny sizes
  PROTOCOL_ARGS="--rows 32 --replicates 2 --timesteps 25"
  TESTS="tests/test_algebra.py tests/test_diffusion_core.py"
  SCALING_ARGS="--rows 512 1024 --max-batch 4096 --timesteps 25 --hidden 64 --layers 3 --train-steps 5"
  SAMPLING_ARGS="--quick --sizes 256 --timesteps 50"
else
  PROTOCOL_ARGS=""
  TESTS="tests/test_sampler.py tests/test_solvers.py tests/test_algebra.py tests/test_diffusion_core.py tests/test_distributed.py"
  SCALING_ARGS="--rows 13500 54000 --max-batch 262144 --timesteps 1000 --hidden 512 --layers 5 --train-steps 100"
  SAMPLING_ARGS="--sizes 1350 13500 --timesteps 1000"
fi

# 0. the paper's whole sampling protocol (84 runs of 13,500 rows at T = 1000; issue 4's target: < 60 s)
step bench_protocol 150 $PY experiments/bench_protocol.py $PROTOCOL_ARGS --repeats 1 --json "$OUT/bench_protocol.json"

# 1. tests on the GPU: the sampler, solvers, algebra, diffusion core, and scale-out. test_distributed
#    runs its multi-device worker twice: on the real device(s), and on 4 virtual CPU devices.
step tests_gpu 200 $PY -m pytest -q -x -p no:cacheprovider $TESTS
step tests_real_devices 90 env CGJAX_TEST_REAL_DEVICES=1 $PY -m pytest -q -p no:cacheprovider \
  tests/test_distributed.py -k "sharded or data_parallel or over_devices"

# 2. scaling benchmark at the paper's scale (one GPU: 1 device; rows 13,500 and 4x that)
step bench_scaling 120 $PY experiments/bench_scaling.py --devices 1 $SCALING_ARGS --features 32 --models 3 \
  --train --batch 512 --repeats 2 --json "$OUT/bench_scaling.json"

# 3. the sampling benchmark of experiments/bench_sampling.py, if present (its own flags)
if [ -f experiments/bench_sampling.py ]; then
  step bench_sampling 120 $PY experiments/bench_sampling.py $SAMPLING_ARGS --models 3 --no-compile \
    --json "$OUT/bench_sampling.json"
fi

{
  echo; echo "## steps"; echo "| step | exit | time |"; echo "| --- | --- | --- |"
  printf '%s\n' "${status[@]}"
  echo; echo "## environment"; echo '```'; cat "$OUT/env.txt"; echo '```'
  for f in tests_gpu tests_real_devices; do
    echo; echo "## $f (tail)"; echo '```'; tail -n 15 "$OUT/$f.log"; echo '```'
  done
  echo; echo "## bench_scaling"; echo '```'; sed -n '/^sampling:/,$p' "$OUT/bench_scaling.log"; echo '```'
  echo; echo "## bench_protocol (tail)"; echo '```'; tail -n 8 "$OUT/bench_protocol.log"; echo '```'
  if [ -f "$OUT/bench_sampling.log" ]; then
    echo; echo "## bench_sampling (tail)"; echo '```'; tail -n 30 "$OUT/bench_sampling.log"; echo '```'
  fi
} > "$SUMMARY"
cat "$SUMMARY"
