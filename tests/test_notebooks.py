"""The notebooks under ``notebooks/``: each is what its generator writes, stored with a complete run, and still runs.

Each ``notebooks/X.ipynb`` is written by ``notebooks/make_X.py`` (cells listed in ``CELLS``) through
``notebook_writer.write_notebook``, which executes it and stores the outputs. Here every stored
notebook is compared with its generator's cells, checked for a complete, error-free run (with its
plots embedded), and executed again in memory (the file on disk is left as it is) in a ``python3``
kernel started from *this* interpreter, ``sys.executable``, so the notebook imports the same
installed ``collabemb`` as the rest of the test suite. The working directory is the notebook's own
folder, so notebooks use paths such as ``../datasets/sample/ratings.csv``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOK_DIR))  # the generators import notebook_writer as a top-level module

import notebook_writer  # noqa: E402  (after the importorskips and the path)

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
GENERATORS = sorted(NOTEBOOK_DIR.glob("make_*.py"))
# image/png outputs each notebook's run must show: one per plot it draws
PLOTS = {
    "quickstart.ipynb": 0,
    "implicit_feedback.ipynb": 0,
    "similar_and_cold_start.ipynb": 0,
    "embeddings_as_features.ipynb": 2,  # plot_pca and plot_bias
    "fastai_to_xgboost.ipynb": 1,  # train vs test RMSE of the three feature sets
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _generator_cells(notebook: Path) -> list[tuple[str, str]]:
    return importlib.import_module(f"make_{notebook.stem}").CELLS


def test_every_notebook_has_a_generator_and_every_generator_a_notebook() -> None:
    notebooks = {p.stem for p in NOTEBOOKS}
    generated = {p.stem.removeprefix("make_") for p in GENERATORS}
    assert notebooks, "no notebooks found"
    assert notebooks == generated, {"without a generator": notebooks - generated, "without a notebook": generated - notebooks}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_notebook_is_what_its_generator_writes(path: Path) -> None:
    differences = notebook_writer.differences(_generator_cells(path), path)
    assert not differences, f"{path.name} is stale: rerun `cd notebooks && python make_{path.stem}.py`\n" + "\n".join(differences)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_stored_notebook_shows_a_complete_run(path: Path) -> None:
    """Every code cell ran, once, in order, without an error; the plots are embedded images."""
    assert path.name in PLOTS, f"declare in PLOTS how many plots {path.name} draws"
    code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), f"{path.name} was not run top to bottom"
    outputs = [out for cell in code for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, f"{path.name} stores an error: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any(out.output_type in ("stream", "execute_result") for out in outputs), f"{path.name} stores no outputs"
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == PLOTS[path.name], f"{path.name}: {len(images)} embedded PNG outputs, expected {PLOTS[path.name]}"
    assert all(len(out.data["image/png"]) > 10_000 for out in images), "an embedded plot is nearly empty"
    assert not any("execution" in cell.metadata for cell in code), f"{path.name} stores per-cell timestamps"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # start from the stored cells without their outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    try:
        notebook_writer.execute(nb, path.parent, name=path.name)  # executed in memory; the file on disk is left as it is
    except notebook_writer.NotebookRunError as exc:
        pytest.fail(str(exc), pytrace=False)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))


def test_notebook_kernel_is_this_interpreter(tmp_path: Path) -> None:
    """The kernel the harness starts runs sys.executable, in the requested folder, with collabemb."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import os, sys, collabemb\nprint(sys.executable)\nprint(sys.prefix)\nprint(os.getcwd())\nprint(collabemb.__file__)"
        )
    )
    notebook_writer.execute(nb, tmp_path)
    lines = "".join(out.get("text", "") for out in nb.cells[0].outputs).splitlines()
    assert Path(lines[0]) == Path(sys.executable), lines
    assert Path(lines[1]) == Path(sys.prefix), lines
    assert Path(lines[2]).resolve() == tmp_path.resolve(), lines
    import collabemb

    assert Path(lines[3]).resolve() == Path(collabemb.__file__).resolve(), lines


def test_write_notebook_stores_outputs_without_volatile_metadata(tmp_path: Path) -> None:
    """The writer runs the cells in the notebook's folder and stores what they showed, merged and without timestamps."""
    out = tmp_path / "tiny.ipynb"
    cells = [("md", "# tiny"), ("code", "import os, time\nprint('a')\ntime.sleep(0.3)\nprint('b')"), ("code", "os.getcwd()")]
    notebook_writer.write_notebook(cells, out)
    nb = nbformat.read(out, as_version=4)
    assert notebook_writer.differences(cells, out) == []
    assert nb.metadata == notebook_writer.build(cells).metadata  # no kernel language_info (Python version)
    first, second = nb.cells[1], nb.cells[2]
    assert [o.output_type for o in first.outputs] == ["stream"] and first.outputs[0].text == "a\nb\n"
    assert second.outputs[0].data["text/plain"] == repr(str(tmp_path.resolve()))
    assert [first.execution_count, second.execution_count] == [1, 2]
    assert "execution" not in first.metadata and "execution" not in second.metadata


def test_write_notebook_leaves_the_file_alone_when_a_cell_fails(tmp_path: Path) -> None:
    out = tmp_path / "broken.ipynb"
    out.write_text("kept")
    with pytest.raises(notebook_writer.NotebookRunError, match=r"broken\.ipynb: a cell raised[\s\S]*ZeroDivisionError"):
        notebook_writer.write_notebook([("code", "x = 1"), ("code", "1 / 0")], out)
    assert out.read_text() == "kept"
