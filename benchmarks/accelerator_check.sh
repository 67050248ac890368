#!/usr/bin/env bash
# One short, prepared check on a machine with an accelerator (GPU/TPU), run from the repo root:
#
#   benchmarks/accelerator_check.sh [--quick] [OUT]
#
# Sections, each under its own time limit and all within TOTAL_S (default 540 s, so the whole
# check fits one 10-minute command):
#   versions     python, jax, flax, optax, devices (and nvidia-smi where present);
#   tests        the numerical tests on the device (basis, layer, symbolic; not the slow ones);
#   accelerator  benchmarks/accelerator.py: kanjax vs a parameter-matched MLP (and jaxKAN when
#                importable) on medium, wide, [1000, 1000, 1] batch 100 and batch 65,536, at
#                G = 5 and 50, forward / backward / step timed separately (results.json);
#   cache        benchmarks/compile_cache.py: the seed train() with a cold and a warm cache;
#   grid_scaling benchmarks/grid_scaling.py at G = 5, 50, 100: the dense, local and auto spline
#                paths and the matmuls-only yardstick on [8, 64, 64, 1], batch 1024;
#   kan_vs_mlp   benchmarks/kan_vs_mlp.py: the KAN-vs-MLP table (float32) on medium and wide.
# --quick: versions, then accelerator.py, compile_cache.py and grid_scaling.py in their --quick
# modes (tiny shapes; runs on a CPU in about a minute), to check the script itself.
#
# Uses the machine's own jax/flax (PYTHONPATH, no install). jaxKAN, when wanted: set
# JAXKAN_WHEEL to its (pure-Python) wheel, or put it at shared/wheels/jaxkan-*.whl; the wheel
# goes on PYTHONPATH as is. Everything is written under OUT (default
# benchmarks/results/accelerator): one log per section, accelerator/results.{json,md},
# compile_cache.json and timings.txt (each section's exit status and seconds).
set -u
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
OUT=${1:-${OUT:-benchmarks/results/accelerator}}
TOTAL_S=${TOTAL_S:-540}
TMP=${TMPDIR:-/tmp}/kanjax_accel
mkdir -p "$OUT" "$TMP"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# kanjax's compilation cache on this machine's scratch disk: a rerun on the same machine
# loads the programs instead of compiling them (compile_cache.py uses fresh directories).
export KANJAX_CACHE_DIR=${KANJAX_CACHE_DIR:-$TMP/xla}
PY=${PYTHON:-python3}
for wheel in ${JAXKAN_WHEEL:-} shared/wheels/jaxkan-*.whl; do
  if [ -f "$wheel" ]; then PYTHONPATH=$PYTHONPATH:$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel"); break; fi
done
START=$(date +%s)
FAILED=""
: > "$OUT/timings.txt"

# section NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S, time left), log to OUT/NAME.txt
section() {
  local name=$1 limit=$2; shift 2
  local left=$(( TOTAL_S - ($(date +%s) - START) ))
  if [ "$left" -lt 15 ]; then
    echo "$name: skipped, ${left}s of TOTAL_S=${TOTAL_S}s left" | tee -a "$OUT/timings.txt"
    FAILED="$FAILED $name"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s)"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -40 "$OUT/$name.txt"
  echo "$name: exit $rc, $(( $(date +%s) - t0 ))s (limit ${limit}s)" | tee -a "$OUT/timings.txt"
  [ "$rc" = 0 ] || FAILED="$FAILED $name"
  return "$rc"
}

versions() {
  nvidia-smi -L 2>/dev/null
  $PY -c "import jaxkan; print('jaxkan', getattr(jaxkan, '__version__', 'importable'))" 2>/dev/null || echo "jaxkan: not importable"
  $PY -c "import jax, flax, optax, sys; print('python', sys.version.split()[0], '| jax', jax.__version__, '| flax', flax.__version__, '| optax', optax.__version__, '|', jax.devices())"
}
export -f versions
export PY

section versions 60 bash -c versions || { echo "no working jax with $PY: stopping"; exit 1; }
if [ "$QUICK" = 1 ]; then
  section accelerator 240 $PY benchmarks/accelerator.py --quick --out "$OUT/accelerator"
  section cache 240 $PY benchmarks/compile_cache.py --quick --json "$OUT/compile_cache.json"
  section grid_scaling 120 $PY benchmarks/grid_scaling.py --quick
else
  section tests 100 $PY -m pytest -q -x -m "not slow" -p no:cacheprovider tests/test_basis.py tests/test_layer.py tests/test_symbolic.py
  # no new row after 160 s, nor later than 50 s before the section's end (a row's worst case)
  budget=$(( TOTAL_S - ($(date +%s) - START) - 50 )); [ "$budget" -gt 160 ] && budget=160
  section accelerator 210 $PY benchmarks/accelerator.py --out "$OUT/accelerator" --budget-s "$budget" --round-ms 100
  section cache 70 $PY benchmarks/compile_cache.py --warm 1 --json "$OUT/compile_cache.json"
  section grid_scaling 60 $PY benchmarks/grid_scaling.py --grids 5 50 100 --rounds 3
  section kan_vs_mlp 80 $PY benchmarks/kan_vs_mlp.py --problems medium wide --no-accuracy --repeats 5 --matmul-n 8192 --out "$TMP"
fi
echo "total: $(( $(date +%s) - START ))s (TOTAL_S=${TOTAL_S}s); failed or skipped:${FAILED:- none}" | tee -a "$OUT/timings.txt"
[ -z "$FAILED" ]
