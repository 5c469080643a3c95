"""Every notebook under ``notebooks/`` runs top to bottom without an error.

Each ``*.ipynb`` is executed in memory with nbclient (outputs are never written back to the
repository) in a ``python3`` kernel started from *this* interpreter, ``sys.executable``, so the
notebook imports the same installed ``collabemb`` as the rest of the test suite, whatever
kernelspecs happen to be installed elsewhere on the machine. The working directory is the
notebook's own folder, so notebooks use paths such as ``../datasets/sample/ratings.csv``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.manager import KernelManager  # noqa: E402  (after the importorskips)
from nbclient.exceptions import CellExecutionError  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
CELL_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in the kernel's tracebacks


def _kernel_manager() -> KernelManager:
    """A ``python3`` kernel manager whose kernel is this interpreter running ipykernel.

    The kernelspec found for "python3" may name plain ``python`` (resolved through PATH) or an
    absolute path to some other environment's interpreter; pinning argv[0] to ``sys.executable``
    (and putting its folder first on PATH for anything the notebook shells out to) makes the
    kernel the venv's python in every case.
    """
    km = KernelManager(kernel_name="python3")
    spec = km.kernel_spec
    spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    bin_dir = str(Path(sys.executable).parent)
    spec.env = {**spec.env, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    return km


def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(),
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(cwd)}},
        allow_errors=False,
    )
    client.execute()
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(NOTEBOOK_DIR)) for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    error = None
    try:
        _execute(nb, path.parent)  # executed in memory; the file on disk is left as it is
    except CellExecutionError as exc:
        error = _ANSI.sub("", str(exc))
    if error is not None:  # outside the except block: report the cell's error, not a chain
        pytest.fail(f"{path.name}: a cell raised\n{error}", pytrace=False)


def test_notebook_kernel_is_this_interpreter(tmp_path: Path) -> None:
    """The kernel the harness starts runs sys.executable, in the requested folder, with collabemb."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import os, sys, collabemb\nprint(sys.executable)\nprint(sys.prefix)\nprint(os.getcwd())\nprint(collabemb.__file__)"
        )
    )
    _execute(nb, tmp_path)
    lines = "".join(out.get("text", "") for out in nb.cells[0].outputs).splitlines()
    assert Path(lines[0]) == Path(sys.executable), lines
    assert Path(lines[1]) == Path(sys.prefix), lines
    assert Path(lines[2]).resolve() == tmp_path.resolve(), lines
    import collabemb

    assert Path(lines[3]).resolve() == Path(collabemb.__file__).resolve(), lines


def test_committed_notebooks_have_no_outputs() -> None:
    """Notebooks are stored with outputs cleared; executed outputs never land in the repository."""
    dirty = [
        f"{p.name} cell {i}"
        for p in NOTEBOOKS
        for i, cell in enumerate(nbformat.read(p, as_version=4).cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"notebooks with stored outputs (clear them before committing): {dirty}"
