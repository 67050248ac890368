"""The notebooks: one shared install cell that does what it says, and saved, clean outputs."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
INSTALL_CELL = (NOTEBOOKS / "install_cell.py").read_text()
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))

# Runs the install cell with pip replaced by a recorder: prints PIP=<pip arguments> per call
# and, at the end, OK or ERROR=<exception type>: <message>.
HARNESS = textwrap.dedent("""
    import json, subprocess, sys
    def fake_run(cmd, **kwargs):
        assert cmd[:3] == [sys.executable, "-m", "pip"], cmd
        print("PIP=" + json.dumps(cmd[3:]))
        return subprocess.CompletedProcess(cmd, 0)
    subprocess.run = fake_run
    try:
        exec(compile(sys.argv[1], "install_cell", "exec"), {"__name__": "__main__"})
        print("OK")
    except Exception as e:
        print(f"ERROR={type(e).__name__}: {e}")
""")


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_every_notebook_starts_with_the_same_install_cell():
    assert len(PATHS) >= 4
    first = {path.name: _source(_code_cells(path)[0]) for path in PATHS}
    assert set(first.values()) == {INSTALL_CELL.rstrip("\n")}, [
        name for name, source in first.items() if source != INSTALL_CELL.rstrip("\n")]
    for path in PATHS:  # no second, older install step further down
        assert not any("pip install" in _source(c) for c in _code_cells(path)[1:]), path.name


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_saved_outputs_come_from_one_clean_run(path):
    cells = _code_cells(path)
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert cells[0]["outputs"] and any(c["outputs"] for c in cells[1:])
    text = json.dumps([c["outputs"] for c in cells])
    assert '"output_type": "error"' not in text
    for local in ("/work/", "/tmp/", "/root/", "/home/", "/Users/", str(NOTEBOOKS.parent)):
        assert local not in text, (path.name, local)


def _run_cell(cwd, *, bare, source=None):
    """Run the install cell in a fresh Python in ``cwd``; ``bare``: without site-packages."""
    dropped = ("KANJAX_SOURCE", "PYTHONPATH") if bare else ("KANJAX_SOURCE",)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    if source is not None:
        env["KANJAX_SOURCE"] = source
    flags = ["-S"] if bare else []
    done = subprocess.run([sys.executable, *flags, "-c", HARNESS, INSTALL_CELL], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    pips = [json.loads(x[4:]) for x in lines if x.startswith("PIP=")]
    return pips, lines[-1], done.stdout


def test_cell_does_nothing_where_kanjax_is_installed():
    pips, result, out = _run_cell(NOTEBOOKS, bare=False)
    assert pips == [] and result == "OK"
    assert "is already installed" in out and "nothing to install" in out


def test_cell_asks_for_a_source_when_it_has_none(tmp_path):
    (tmp_path / "kanjax").mkdir()  # a same-named folder is no installed kanjax
    pips, result, out = _run_cell(tmp_path, bare=True)
    assert pips == []
    assert result.startswith("ERROR=RuntimeError") and "set KANJAX_SOURCE" in result
    assert "no kanjax distribution is installed" in out


def _checkout(tmp_path, name):
    (tmp_path / "repo" / "notebooks").mkdir(parents=True)
    (tmp_path / "repo" / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1"\n')
    return tmp_path / "repo"


def test_cell_installs_the_checkout_it_sits_in(tmp_path):
    repo = _checkout(tmp_path, "kanjax")
    pips, result, out = _run_cell(repo / "notebooks", bare=True, source="ignored-here")
    assert pips == [["install", "-q", "-e", str(repo.resolve())]]
    assert "kanjax checkout" in out
    # pip did not really run, so kanjax is still missing and the cell says so
    assert result.startswith("ERROR=RuntimeError") and "restart the kernel" in result


def test_cell_installs_kanjax_source_outside_a_checkout(tmp_path):
    _checkout(tmp_path, "not-kanjax")
    spec = "git+https://example.invalid/kanjax.git"
    pips, _, out = _run_cell(tmp_path / "repo" / "notebooks", bare=True, source=spec)
    assert pips == [["install", "-q", spec]]
    assert f"KANJAX_SOURCE = {spec!r}" in out


def test_cell_reports_a_same_named_package_folder_that_hides_kanjax(tmp_path):
    (tmp_path / "kanjax").mkdir()
    (tmp_path / "kanjax" / "__init__.py").write_text("")
    pips, result, _ = _run_cell(tmp_path, bare=False)
    assert pips == []
    assert result.startswith("ERROR=RuntimeError") and "hides it" in result


def test_cell_verdict_next_to_a_bare_kanjax_folder_is_true(tmp_path):
    # Whether a bare same-named folder hides kanjax depends on how kanjax was installed;
    # whatever the cell says must hold for `import kanjax` in the same place.
    (tmp_path / "kanjax").mkdir()
    pips, result, _ = _run_cell(tmp_path, bare=False)
    assert pips == []
    probe = "import kanjax, importlib.metadata as m; assert kanjax.__version__ == m.version('kanjax')"
    check = subprocess.run([sys.executable, "-c", probe], check=False, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    if result == "OK":
        assert check.returncode == 0, check.stderr
    else:
        assert "hides it" in result and check.returncode != 0
