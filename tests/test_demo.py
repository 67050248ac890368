import json
import subprocess
import sys

import numpy as np
import pytest

from kanjax import cli, demo
from kanjax.plotting import plot_grad_norms, plot_loss

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_cli_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["demo", "--epochs", "3", "--batch-size", "128", "--out", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test MSE" in printed and "layers.2" in printed
    for name in ("history.json", "results.json", "loss.png", "grad_norm.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "loss.png").read_bytes()[:8] == PNG_MAGIC
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 3
    assert set(history["grad_norm"]) == {"layers.0", "layers.1", "layers.2"}
    results = json.loads((out / "results.json").read_text())
    assert results["num_params"] == 336 and results["settings"]["batch_size"] == 128
    assert np.isfinite(results["test_mse"])


@pytest.mark.parametrize("basis, bound", [("taylor", 1e-5), ("bspline", 1e-4)])
def test_seed_experiment_reaches_target_accuracy(basis, bound):
    # The seed document's protocol with kanjax's defaults (the seed experiment's accuracy targets).
    result = demo.run_seed_experiment(basis=basis, progress=False)
    assert result.test_mse <= bound, result.test_mse
    assert result.history.train_loss[-1] < result.history.train_loss[0] / 1000


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--epochs", "0"])
    assert "must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--basis", "fourier"])


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "kanjax", "demo", "--help"],
                          capture_output=True, text=True, check=True)
    assert "--basis" in done.stdout and "--out" in done.stdout


def test_plots_render_headless(tmp_path):
    from kanjax import History

    h = History(train_loss=[1.0, 0.1, 0.01], val_loss=[1.1, 0.2, 0.02],
                grad_norm={"layers.0": [1.0, 0.5, 0.2], "layers.1": [2.0, 1.0, 0.1]})
    for fn, name in ((plot_loss, "loss"), (plot_grad_norms, "grads")):
        for ext in ("png", "svg"):
            path = tmp_path / f"{name}.{ext}"
            fig = fn(h, path)
            assert path.stat().st_size > 1000
            assert len(fig.axes[0].get_lines()) == 2


def test_plot_layer_draws_every_edge(tmp_path):
    import jax.numpy as jnp
    from flax import nnx

    import kanjax
    from kanjax.plotting import plot_layer

    layer = kanjax.KANLayer(2, 3, basis="bspline", rngs=nnx.Rngs(0))
    x = jnp.array([[-1.0, 0.0], [0.5, 2.0]])
    fig = plot_layer(layer, x, tmp_path / "edges.png")
    assert len(fig.axes) == 6 and (tmp_path / "edges.png").stat().st_size > 1000
    line = fig.axes[5].get_lines()[0]  # output 2, input 1
    xs, ys = line.get_data()
    assert xs.min() == 0.0 and xs.max() == 2.0
    expected = layer.edge_activations(jnp.stack([jnp.linspace(-1, 0.5, 200), jnp.asarray(xs)], -1))
    np.testing.assert_allclose(ys, np.asarray(expected[:, 1, 2]), atol=1e-6)
    assert fig._repr_png_()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        plot_layer(layer, jnp.ones((4, 3)))
