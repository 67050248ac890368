"""Run the notebooks in place, so that the outputs saved in them are the ones they produce.

    python notebooks/regenerate.py                    # every notebooks/*.ipynb
    python notebooks/regenerate.py notebooks/01_seed_experiment.ipynb

Before running, the first code cell of each notebook is set to ``install_cell.py`` (the
install cell every notebook shares). Each notebook runs top to bottom in its own folder with
a kernel of the Python running this script, as ``pytest --nbmake`` runs it. Afterwards the
cells' execution timestamps are dropped, and text outputs that contain a local absolute path
(this checkout, the home or the temporary folder) stop the script before anything is written.
Needs the dev dependencies (nbmake brings nbclient, nbformat and ipykernel).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
INSTALL_CELL = (HERE / "install_cell.py").read_text().rstrip("\n")
INSTALL_MARK = INSTALL_CELL.splitlines()[0]


def set_install_cell(nb) -> None:
    """Make the first code cell the shared install cell (inserted after the title if missing)."""
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    if code and nb.cells[code[0]].source.startswith(INSTALL_MARK):
        nb.cells[code[0]].source = INSTALL_CELL
        return
    at = code[0] if code else len(nb.cells)
    nb.cells.insert(at, nbformat.v4.new_code_cell(INSTALL_CELL))


def _texts(cell):
    for out in cell.get("outputs", []):
        if "text" in out:
            yield out["text"]
        if out.get("output_type") == "error":
            yield "\n".join(out.get("traceback", []))
        for kind, value in out.get("data", {}).items():
            if kind.startswith("text/") or kind.endswith("json"):
                yield value if isinstance(value, str) else str(value)


def local_paths(nb) -> list[str]:
    """Local absolute paths (checkout, home, temporary folder) found in the text outputs."""
    roots = {str(HERE.parent), os.path.expanduser("~"), tempfile.gettempdir(), os.getcwd()}
    roots = {r for r in roots if len(r) > 1}
    return sorted({r for cell in nb.cells for text in _texts(cell) for r in roots if r in text})


def tidy(nb) -> None:
    """Drop what changes from run to run without changing what the notebook shows."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata["language_info"] = {"name": "python"}


def regenerate(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    set_install_cell(nb)
    nb.metadata.pop("widgets", None)  # widget state of an earlier run; this run saves its own
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    tidy(nb)
    found = local_paths(nb)
    if found:
        raise SystemExit(f"{path.name}: outputs contain local paths {found}; not written")
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every .ipynb next to this script)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = parser.parse_args(argv)
    for path in args.notebooks or sorted(HERE.glob("*.ipynb")):
        seconds = regenerate(path.resolve(), args.timeout)
        print(f"{path.name}: ran in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
