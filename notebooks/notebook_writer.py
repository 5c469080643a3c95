"""Shared by the ``make_*.py`` generators: turn a list of cells into a stored, output-free notebook."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook of ``("md" | "code", source)`` cells, with stable cell ids."""
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for kind, source in cells:
        nb.cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives a byte-identical file
    nbformat.validate(nb)
    return nb


def write_notebook(cells: list[tuple[str, str]], out: Path) -> None:
    nbformat.write(build(cells), out)
    print(f"wrote {out}")
