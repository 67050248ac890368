"""The README's Python examples run as written and do what their comments say."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_block(heading: str) -> str:
    """The first ```python block of the README section titled ``heading``."""
    text = README.read_text()
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"README has no section {heading!r}"
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, f"README section {heading!r} has no python block"
    return block.group(1)


@pytest.fixture(scope="module")
def first_model():
    """The namespace after running "A first model" (it trains the demo's KAN)."""
    namespace = {}
    exec(compile(_python_block("A first model"), "README: A first model", "exec"), namespace)
    return namespace


def test_first_model_trains_and_reports_what_the_comments_say(first_model):
    import kanjax

    model, history, x, z = (first_model[k] for k in ("model", "history", "x", "z"))
    assert isinstance(model, kanjax.KAN) and first_model["y"].shape == (1000, 1)
    assert float(kanjax.evaluate(model, (x, z))) < 1e-4  # the demo's fit: MSE ~2e-6
    assert len(history.train_loss) == 200 and len(history.grad_norm["layers.0"]) == 200
    assert np.isfinite(history.grad_norm["layers.0"][-1])


def test_saving_and_loading_runs_with_an_optax_state(first_model, tmp_path, monkeypatch):
    import optax
    from flax import nnx

    import kanjax

    monkeypatch.chdir(tmp_path)  # the block writes runs/kan and runs/job
    namespace = dict(first_model)
    model = namespace["model"]
    tx = optax.adam(1e-3)  # what the block assumes: an optimizer and its state
    namespace.update(tx=tx, opt_state=tx.init(nnx.state(model, nnx.Param)))
    expected = np.asarray(model(namespace["x"]))
    exec(compile(_python_block("Saving and loading"), "README: Saving and loading", "exec"),
         namespace)
    ckpt = namespace["ckpt"]
    assert isinstance(ckpt.model, kanjax.KAN) and ckpt.optimizer_state is not None
    np.testing.assert_allclose(np.asarray(ckpt.model(namespace["x"])), expected, rtol=1e-6)
    assert (tmp_path / "runs" / "job").is_dir()
    assert len(namespace["history"].train_loss) == 200
