#!/usr/bin/env bash
# One short, prepared check on a machine with an accelerator (GPU/TPU), run from the repo root:
# versions, the numerical tests on the device, the KAN-vs-MLP speed table in float32 and
# bfloat16, and the seed demo. Uses the machine's own jax/flax (PYTHONPATH, no install).
# Logs go to $OUT (default benchmarks/results/accelerator).
set -u
OUT=${OUT:-benchmarks/results/accelerator}
TMP=${TMPDIR:-/tmp}/kanjax_accel
mkdir -p "$OUT" "$TMP"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{ nvidia-smi -L 2>/dev/null; $PY -c "import jax, flax, optax, sys; print('python', sys.version.split()[0], '| jax', jax.__version__, '| flax', flax.__version__, '| optax', optax.__version__, '|', jax.devices())"; } 2>&1 | tee "$OUT/versions.txt"
timeout 150 $PY -m pytest -q -x -m "not slow" -p no:cacheprovider tests/test_basis.py tests/test_layer.py tests/test_symbolic.py 2>&1 | tail -25 | tee "$OUT/tests.txt"
timeout 110 $PY benchmarks/kan_vs_mlp.py --problems seed medium wide --no-accuracy --repeats 5 --matmul-n 8192 --out "$TMP" 2>&1 | tee "$OUT/kan_vs_mlp_f32.txt"
timeout 70 $PY benchmarks/kan_vs_mlp.py --problems medium wide --no-accuracy --repeats 5 --dtype bfloat16 --matmul-n 8192 --out "$TMP" 2>&1 | tee "$OUT/kan_vs_mlp_bf16.txt"
( time timeout 60 $PY -m kanjax demo --no-progress --out "$TMP/demo" ) 2>&1 | tail -12 | tee "$OUT/demo.txt"
