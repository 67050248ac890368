"""kanjax.convert: format-1 checkpoints (written by kanjax 0.1.0, stored in tests/data/format1
with the outputs that kanjax computed for x.npy) converted to the current format."""

import hashlib
import json
import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

import kanjax
from kanjax.checkpoint import CheckpointError
from kanjax.convert import convert_checkpoint

DATA = pathlib.Path(__file__).parent / "data" / "format1"


def _tree_digest(root: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["taylor", "bspline", "mlp"])
def test_converted_checkpoint_computes_what_kanjax_0_1_computed(tmp_path, name):
    old = tmp_path / "old"
    shutil.copytree(DATA / name, old)
    before = _tree_digest(old)
    with pytest.raises(CheckpointError, match="convert-checkpoint"):
        kanjax.load(old)
    new = convert_checkpoint(old, tmp_path / "new")
    got = kanjax.load(new, with_extras=True)
    x = jnp.asarray(np.load(DATA / "x.npy"))
    # Float32 rounding differs between CPUs (fused multiply-adds); wrong arrays differ by ~1e-1.
    np.testing.assert_allclose(np.asarray(got.model(x)), np.load(DATA / f"{name}_out.npy"),
                               rtol=1e-5, atol=1e-6)
    assert got.history.train_loss == [0.5, 0.25] and got.metadata == {"name": name}
    assert _tree_digest(old) == before  # the old checkpoint is only read
    with pytest.raises(FileExistsError):
        convert_checkpoint(old, new)


def test_bspline_conversion_keeps_refined_grids_and_symbolic_edges(tmp_path):
    model = kanjax.load(convert_checkpoint(DATA / "bspline", tmp_path / "new"))
    meta = json.loads((DATA / "bspline" / "metadata.json").read_text())
    assert model.layers[0].grid_size == meta["model"]["layers"][0]["attributes"]["grid_size"]["value"]
    assert model.layers[0].sym_names == ("sin",) and model.layers[0].bias is not None


def test_a_corrupt_or_forged_format_1_file_is_refused_and_nothing_runs(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(DATA / "taylor", old)
    data_file = max((p for p in (old / "arrays").rglob("*") if p.is_file()),
                    key=lambda p: p.stat().st_size)
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data_file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        convert_checkpoint(old, tmp_path / "a")

    shutil.rmtree(old)
    shutil.copytree(DATA / "taylor", old)
    marker = tmp_path / "marker"
    meta = json.loads((old / "metadata.json").read_text())
    meta["model"]["class"] = "kanjax.checkpoint:os.system"
    meta["optimizer_state"] = {"t": "namedtuple", "class": "kanjax.checkpoint:os.system",
                               "fields": {"command": f"touch {marker}"}}
    (old / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot be converted"):
        convert_checkpoint(old, tmp_path / "b")
    meta["model"]["class"] = "KAN"
    meta["model"]["layers"][0]["attributes"]["degree"]["value"] = 9  # arrays no longer fit
    (old / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="array"):
        convert_checkpoint(old, tmp_path / "c")
    assert not marker.exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_convert_checkpoint_command(tmp_path, capsys):
    from kanjax import cli

    assert cli.main(["convert-checkpoint", str(DATA / "mlp"), str(tmp_path / "new")]) == 0
    assert "converted" in capsys.readouterr().out
    x = jnp.asarray(np.load(DATA / "x.npy"))
    np.testing.assert_allclose(np.asarray(kanjax.load(tmp_path / "new")(x)),
                               np.load(DATA / "mlp_out.npy"), rtol=1e-5, atol=1e-6)
    assert cli.main(["convert-checkpoint", str(tmp_path / "new"), str(tmp_path / "again")]) == 1
    assert "not a format-1" in capsys.readouterr().err
