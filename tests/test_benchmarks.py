"""Smoke runs of the benchmark scripts' ``--quick`` modes (the figures themselves are not checked)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    if str(BENCHMARKS) not in sys.path:  # as when the script runs: its folder on sys.path
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # the fast suite runs the same script with --driver train below
def test_kan_vs_mlp_quick_writes_every_row(tmp_path):
    kan_vs_mlp = _load("kan_vs_mlp")
    assert kan_vs_mlp.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "kan_vs_mlp_quick.json").read_text())["results"]
    assert [r["model"] for r in rows] == ["kan-bspline", "kan-taylor", "mlp", "mlp-matched"]
    rounds = {len(r["step_ms_rounds"]) for r in rows}
    assert rounds == {2}  # --quick: 2 rounds, every model timed in each
    for r in rows:
        assert r["finite"] and r["step_ms"] > 0 and r["vs_floor"] > 0 and r["test_mse"] >= 0
        # the median of the rounds, not a stray value
        assert min(r["step_ms_rounds"]) <= r["step_ms"] <= max(r["step_ms_rounds"])
    by_model = {r["model"]: r for r in rows}
    assert by_model["mlp-matched"]["vs_mlp_matched"] == 1.0
    # the matched MLP has about as many parameters as the B-spline KAN it is matched to
    assert abs(by_model["mlp-matched"]["params"] / by_model["kan-bspline"]["params"] - 1) < 0.1
    assert (tmp_path / "kan_vs_mlp_quick.png").stat().st_size > 0


def test_kan_vs_mlp_train_driver_times_kanjax_train(tmp_path):
    kan_vs_mlp = _load("kan_vs_mlp")
    assert kan_vs_mlp.main(["--quick", "--no-accuracy", "--driver", "train", "--models",
                            "kan-bspline", "mlp-matched", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "kan_vs_mlp_quick_train.json").read_text())
    assert data["driver"] == "train"
    rows = data["results"]
    assert [r["model"] for r in rows] == ["kan-bspline", "mlp-matched"]
    for r in rows:
        assert r["finite"] and len(r["step_ms_rounds"]) == 2 and r["step_ms"] > 0
        assert r["compile_s"] > 0 and r["memory_mb"] is None
    assert rows[0]["vs_mlp_matched"] > 0 and rows[1]["vs_mlp_matched"] == 1.0


def test_peers_quick_runs_kanjax_and_skips_or_runs_a_peer(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peers.py"), "--quick", "--out", str(tmp_path),
         "--impls", "kanjax-bspline-train", "kanjax-bspline-jit", "matmuls-only-jit",
         "jaxkan-spline-nnx"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = json.loads((tmp_path / "peers_quick.json").read_text())
    status = {r["impl"]: r["status"] for r in out["results"]}
    assert status["kanjax-bspline-train"] == status["kanjax-bspline-jit"] == "ok"
    assert status["matmuls-only-jit"] == "ok"  # the yardstick, compared with kanjax's jit row
    yardstick = next(r for r in out["results"] if r["impl"] == "matmuls-only-jit")
    assert yardstick["reference"] == "kanjax-bspline-jit" and yardstick["step_vs_kanjax"] > 0
    skipped = {s["impl"] for s in out["skipped"]}
    # jaxkan is an optional extra: it either ran or was skipped with a note, never crashed
    assert status.get("jaxkan-spline-nnx") == "ok" or "jaxkan-spline-nnx" in skipped



def test_accelerator_quick_times_every_program_of_kanjax_and_the_matched_mlp(tmp_path):
    import jax
    from flax import nnx

    import kanjax

    accelerator = _load("accelerator")
    code = accelerator.main(["--quick", "--out", str(tmp_path), "--models", "kanjax", "mlp",
                             "jaxkan"])
    out = json.loads((tmp_path / "results.json").read_text())
    rows = out["results"]
    assert code == 0 and [r["status"] for r in rows] == ["ok", "ok"]
    assert [(r["case"], r["grid"], r["model"]) for r in rows] == [("tiny", 5, "kanjax"),
                                                                    ("tiny", 5, "mlp")]
    for r in rows:
        for name in accelerator.PROGRAMS:
            assert len(r["rounds_ms"][name]) == 2 and r["compile_s"][name] > 0
            assert min(r["rounds_ms"][name]) <= r[f"{name}_ms"] <= max(r["rounds_ms"][name])
        assert r["backward_ms"] == pytest.approx(r["grad_ms"] - r["forward_ms"])
    kan, mlp = rows
    # the trainable parameters of the B-spline KAN [4, 8, 1], G = 5, k = 3, all of them
    model = kanjax.KAN([4, 8, 1], basis="bspline", grid_size=5, order=3, rngs=nnx.Rngs(0))
    assert kan["params"] == sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert abs(mlp["params"] / kan["params"] - 1) < 0.1
    assert mlp["vs_mlp"]["step"] == 1.0
    assert kan["vs_mlp"]["step"] == pytest.approx(kan["step_ms"] / mlp["step_ms"])
    assert out["device"] and out["versions"]["jax"] == jax.__version__
    # jaxkan either ran or was skipped with a reason, never crashed
    assert out["versions"]["jaxkan"] is not None or out["skipped"][0]["model"] == "jaxkan"
    assert (tmp_path / "results.md").read_text().count("| tiny |") == 2


@pytest.mark.parametrize("widths, target", [([8, 64, 64, 1], 24000), ([1000, 1000, 1], 9_000_000),
                                            ([4, 8, 1], 400), ([3, 5], 7)])
def test_accelerator_matched_mlp_is_the_nearest_width_by_brute_force(widths, target):
    accelerator = _load("accelerator")
    got = accelerator.matched_mlp_widths(widths, target)
    assert got[0] == widths[0] and got[-1] == widths[-1] and len(got) == len(widths)
    if len(widths) == 2:
        assert got == widths
        return

    def count(h):  # dense layers with biases, counted directly
        w = [widths[0]] + [h] * (len(widths) - 2) + [widths[-1]]
        return sum(w[i] * w[i + 1] + w[i + 1] for i in range(len(w) - 1))

    best = min(abs(count(h) - target) for h in range(1, 20000))
    assert abs(count(got[1]) - target) == best


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


@pytest.mark.parametrize(
    "step_s, expected",
    [
        (0.003, (10, 56)),    # 7 blocks = 0.21 s < 2 s: more blocks, capped at 8x
        (0.010, (10, 20)),    # 2 s / (10 x 10 ms) = 20 blocks
        (0.050, (10, 7)),     # 7 blocks = 3.5 s >= 2 s: as asked
        (1.000, (8, 7)),      # 70 s > the 60 s budget: shorter blocks
        (20.00, (1, 3)),      # even 1-step blocks overrun: at least 3 of them
    ],
)
def test_peers_plan_timing_extends_fast_rows_and_shrinks_slow_ones(step_s, expected):
    peers = _load("peers")
    assert peers.plan_timing(step_s, 10, 7, 60.0, True, min_s=2.0) == expected
    if expected[1] > 7:  # without a minimum, a fast row keeps --repeats blocks
        assert peers.plan_timing(step_s, 10, 7, 60.0, True) == (10, 7)


def test_peers_malloc_retain_sets_glibc_variables_and_inherit_passes_the_environment():
    peers = _load("peers")
    base = {"PATH": "/bin", "MALLOC_ARENA_MAX": "2"}
    inherited = peers.child_env("inherit", base)
    assert inherited["PATH"] == "/bin" and inherited["MALLOC_ARENA_MAX"] == "2"
    assert "MALLOC_MMAP_MAX_" not in inherited and "MALLOC_TRIM_THRESHOLD_" not in inherited
    retained = peers.child_env("retain", base)
    assert retained["MALLOC_MMAP_MAX_"] == "0"
    assert int(retained["MALLOC_TRIM_THRESHOLD_"]) >= 2**40
    assert retained["MALLOC_ARENA_MAX"] == "1"  # one arena: no block is mapped anew per call
    assert base == {"PATH": "/bin", "MALLOC_ARENA_MAX": "2"}  # the caller's mapping is untouched
    with pytest.raises(ValueError, match="--malloc"):
        peers.child_env("tcmalloc", base)
    # the header names every allocator setting a subprocess runs with, and only those
    described = peers.allocator_settings(retained)
    assert "MALLOC_ARENA_MAX=2" in peers.allocator_settings(inherited)
    assert "MALLOC_MMAP_MAX_=0" in described and "MALLOC_ARENA_MAX=1" in described
    assert "PATH" not in described
    assert "defaults" in peers.allocator_settings({"PATH": "/bin"})
    assert "LD_PRELOAD=libtcmalloc.so" in peers.allocator_settings({"LD_PRELOAD": "libtcmalloc.so"})
    assert "GLIBC_TUNABLES=glibc.malloc.trim_threshold=1" in peers.allocator_settings(
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})


def test_symbolic_regression_recipe_recovers_the_exact_formula(tmp_path):
    symbolic_regression = _load("symbolic_regression")
    out = tmp_path / "symbolic_regression.json"
    assert symbolic_regression.main(["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["equivalent"] and result["formula_test_rmse"] <= 1e-4


@pytest.mark.slow  # its steps (product node, LM, prune, snapping, formula) have fast tests
def test_feynman_quick_writes_a_complete_row(tmp_path):
    feynman = _load("feynman")
    assert len(feynman.EQUATIONS) >= 20 and len({e[0] for e in feynman.EQUATIONS}) >= 20
    out = tmp_path / "feynman.json"
    assert feynman.main(["--quick", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["id"] == feynman.EQUATIONS[0][0] and isinstance(row["equivalent"], bool)
    for key in ("kan_test_rmse", "mlp_test_rmse", "formula_test_rmse", "seconds"):
        assert row[key] >= 0 and row[key] == row[key], key  # finite, not nan
    # the MLP baseline is parameter-matched to the KAN
    assert abs(row["mlp_params"] / row["kan_params"] - 1) < 0.35


def test_grid_scaling_quick_prints_every_row(capsys):
    grid_scaling = _load("grid_scaling")
    assert grid_scaling.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "device:" in out and "jax" in out and "settings:" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    paths = ("dense", "local", "auto", "matmuls-only")
    assert [(r[0], r[1]) for r in rows] == [(g, p) for g in ("5", "20") for p in paths]
    for r in rows:
        assert float(r[2]) > 0 and float(r[3]) > 0
    assert all(float(r[3]) == 1.0 for r in rows[:4])  # each path's own G=5 row


def test_matmuls_only_model_is_copies_of_the_input_times_the_weights():
    import jax
    import numpy as np

    model = _load("matmuls_only").matmuls_only_model([3, 5, 2], n_features=4, seed=1)
    weights = [np.asarray(w[...]) for w in model.weights]
    assert [w.shape for w in weights] == [(12, 5), (20, 2)]
    x = np.random.default_rng(0).uniform(-1, 1, (7, 3)).astype(np.float32)
    expected = x
    for w in weights:  # the features a dense layer with 4 basis values per input would have
        expected = np.concatenate([(1 + 0.25 * j) * expected for j in range(4)], axis=1) @ w
    np.testing.assert_allclose(np.asarray(jax.jit(model.__call__)(x)), expected, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.slow  # about 20 s of subprocesses; the GPU machine runs the full script
def test_accelerator_check_quick_runs_every_section(tmp_path):
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "accelerator_check.sh"), "--quick", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=BENCHMARKS.parent,
        env={**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    timings = (tmp_path / "timings.txt").read_text()
    for section in ("versions", "accelerator", "cache", "grid_scaling"):
        assert f"{section}: exit 0" in timings
    assert "failed or skipped: none" in timings
    assert json.loads((tmp_path / "accelerator" / "results.json").read_text())["results"]


@pytest.mark.parametrize("flag", ["--grids", "--scaling-grids"])
def test_grid_extension_refuses_a_single_grid_before_training(flag, capsys):
    grid_extension = _load("grid_extension")
    with pytest.raises(SystemExit) as stop:
        grid_extension.main([flag, "5"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} needs at least two grid sizes, got [5]" in err
