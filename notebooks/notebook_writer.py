"""Shared by the ``make_*.py`` generators: turn a list of cells into a notebook, run it, store it with its outputs.

A generator calls ``write_notebook(CELLS, out)``. The notebook is executed top to bottom in a
``python3`` kernel that is *this* interpreter (``kernel_manager``), in the notebook's own folder,
and only written when every cell succeeds, so a committed notebook always shows a complete run.
What a rerun would change for no reason is left out: nbclient's per-cell timestamps and the
kernel's ``language_info`` (Python version, codemirror mode); the notebook metadata is always
the one ``build`` gives.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.manager import KernelManager
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELL_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in the kernel's tracebacks


class NotebookRunError(RuntimeError):
    """A cell raised; the message names the notebook and gives the cell's source and traceback."""


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of ``("md" | "code", source)`` cells, with stable cell ids and no outputs."""
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for kind, source in cells:
        nb.cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating does not renumber the cells
    nbformat.validate(nb)
    return nb


def kernel_manager() -> KernelManager:
    """A ``python3`` kernel manager whose kernel is this interpreter running ipykernel.

    The kernelspec found for "python3" may name plain ``python`` (resolved through PATH) or an
    absolute path to some other environment's interpreter; pinning argv[0] to ``sys.executable``
    (and putting its folder first on PATH for anything the notebook shells out to) makes the
    kernel the venv's python in every case. ``PYTHONHASHSEED=0`` keeps the order of sets of
    strings, and so the printed outputs, the same from run to run.
    """
    km = KernelManager(kernel_name="python3")
    spec = km.kernel_spec
    spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    bin_dir = str(Path(sys.executable).parent)
    spec.env = {**spec.env, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"}
    return km


def execute(nb: nbformat.NotebookNode, cwd: Path, *, name: str = "notebook") -> nbformat.NotebookNode:
    """Run every cell of ``nb`` in place, in a fresh kernel working in ``cwd``; returns ``nb``.

    Raises ``NotebookRunError`` (the failing cell's source and traceback, without colour codes)
    when a cell raises, and nbclient's ``CellTimeoutError`` when one runs longer than
    ``CELL_TIMEOUT_S`` seconds.
    """
    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager(),
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(cwd)}},
        allow_errors=False,
        record_timing=False,  # no per-cell timestamps in cell.metadata.execution
    )
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = _ANSI.sub("", str(exc))
    if error is not None:  # outside the except block: report the cell's error, not a chain
        raise NotebookRunError(f"{name}: a cell raised\n{error}")
    return nb


def run(cells: list[tuple[str, str]], cwd: Path, *, name: str = "notebook") -> nbformat.NotebookNode:
    """``build(cells)`` executed in ``cwd``, with the notebook metadata reset to what ``build`` gives."""
    nb = build(cells)
    metadata = copy.deepcopy(nb.metadata)  # nbclient fills in language_info in place
    execute(nb, cwd, name=name)
    nb.metadata = metadata  # drop the kernel's language_info (Python version, mimetype, ...)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)
    nbformat.validate(nb)
    return nb


def _merge_streams(outputs: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    """Consecutive stream outputs of one name (stdout, stderr) as one output.

    How the kernel splits a cell's printing into messages depends on timing (it flushes on a
    timer); merged, the same printing is stored the same way on every run.
    """
    merged: list[nbformat.NotebookNode] = []
    for out in outputs:
        last = merged[-1] if merged else None
        if out.output_type == "stream" and last is not None and last.output_type == "stream" and last.name == out.name:
            last.text += out.text
        else:
            merged.append(out)
    return merged


def differences(cells: list[tuple[str, str]], path: Path) -> list[str]:
    """How the notebook stored at ``path`` differs from what ``build(cells)`` gives, outputs aside.

    Compares the notebook metadata and, cell by cell, the type, id and source; an empty list means
    the stored notebook was written from these cells.
    """
    want, have = build(cells), nbformat.read(path, as_version=4)
    found = []
    if have.metadata != want.metadata:
        found.append(f"notebook metadata {dict(have.metadata)} != {dict(want.metadata)}")
    if len(have.cells) != len(want.cells):
        found.append(f"{len(have.cells)} cells stored, {len(want.cells)} in the generator")
    for i, (h, w) in enumerate(zip(have.cells, want.cells, strict=False)):  # a count mismatch is reported above
        for key in ("cell_type", "id", "source"):
            if h.get(key) != w.get(key):
                found.append(f"cell {i}: {key} differs")
    return found


def write_notebook(cells: list[tuple[str, str]], out: Path) -> None:
    """Build the notebook, run it in ``out``'s folder and write it with its outputs to ``out``.

    Nothing is written when a cell fails: the ``NotebookRunError`` names the cell and its error.
    """
    out = Path(out)
    nb = run(cells, out.resolve().parent, name=out.name)
    nbformat.write(nb, out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
