"""Every teaching notebook runs from top to bottom in a clean kernel, with its default (small-run) settings.

The notebooks check their own claims with asserts, so a failing claim fails here. Runs they train go to a
temporary folder (NOTEBOOK_RUNS); the committed notebooks are not modified.
"""

import re

import nbformat
import pytest

from notebooks.run import execute, main, notebook_paths


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("NOTEBOOKS_FULL", raising=False)
    committed = path.read_bytes()
    seconds = execute(path, out=tmp_path / path.name)  # the per-cell timeout is a hang guard (CELL_TIMEOUT_S)
    print(f"{path.name}: {seconds:.1f} s")
    assert path.read_bytes() == committed, f"executing {path.name} changed the committed notebook"
    assert (tmp_path / path.name).stat().st_size > 0


def test_a_small_run_never_replaces_the_committed_full_size_outputs(monkeypatch):
    monkeypatch.delenv("NOTEBOOKS_FULL", raising=False)
    with pytest.raises(SystemExit, match="set NOTEBOOKS_FULL=1"):
        main(["--in-place", "02"])


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_outputs_hold_no_session_noise_and_stay_under_1_mb(path):
    from notebooks.run import SESSION_NOISE

    assert path.stat().st_size < 1_000_000, f"{path.name}: {path.stat().st_size:,} bytes"
    nb = nbformat.read(path, as_version=4)
    for number, cell in enumerate(nb.cells):
        assert "execution" not in cell.get("metadata", {}), f"{path.name} cell {number}: execution timestamps"
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            noise = [line for line in text.splitlines() if any(n in line for n in SESSION_NOISE)]
            assert not noise, f"{path.name} cell {number}: {noise[0]}"


# A figure the prose states: a number with a decimal point or a percent sign (29.30, 0.745, 88.74%, 5%), outside
# inline code and formulas, and not a reference such as "section 3.2" or "Table 4".
FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?%|(?<![\w.])\d[\d,]*\.\d+(?![\d.])")
REFERENCE = re.compile(r"(?:sections?|tables?|equations?|figures?|v)\s*$", re.IGNORECASE)


def figures_not_printed(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """(cell, figure) for each figure a markdown cell states that no code cell of the notebook prints or writes:
    prose that quotes a measurement must quote the notebook's own output (a percentage may be printed without its
    sign, as in a table's "%" column; literature figures are printed beside the measurement, or kept as constants
    in the code that compares with them)."""
    shown = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            shown.append(cell.source)
            for output in cell.get("outputs", []):
                shown.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
    shown_text = "\n".join(shown)
    missing = []
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        prose = re.sub(r"`[^`]*`|\$[^$]*\$", "", cell.source)
        for match in FIGURE.finditer(prose):
            if REFERENCE.search(prose[max(0, match.start() - 12) : match.start()]):
                continue
            figure = match.group()
            if figure not in shown_text and not (
                figure.endswith("%") and re.search(rf"(?<![\d.]){re.escape(figure[:-1])}(?![\d.])", shown_text)
            ):
                missing.append((number, figure))
    return missing


def test_the_figure_check_catches_prose_that_kept_an_old_figure():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print(ratio)"),
        nbformat.v4.new_markdown_cell("The ratio is 0.745 (section 3.2, Table 4), 12.5% of the `0.1` budget."),
    ]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="ratio 0.175, share 12.5%\n")]
    assert figures_not_printed(nb) == [(1, "0.745")]  # re-run: 0.745 became 0.175, the prose did not follow
    nb.cells[1].source = nb.cells[1].source.replace("0.745", "0.175")
    assert figures_not_printed(nb) == []


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_every_figure_the_prose_states_is_the_notebooks_own_output(path):
    missing = figures_not_printed(nbformat.read(path, as_version=4))
    assert not missing, f"{path.name}: figures stated in prose that no cell prints: {missing}"
