"""Every teaching notebook runs from top to bottom in a clean kernel, with its default (small-run) settings.

The notebooks check their own claims with asserts, so a failing claim fails here. Runs they train go to a
temporary folder (NOTEBOOK_RUNS); the committed notebooks are not modified.
"""

import pytest

from notebooks.run import execute, notebook_paths


def test_all_five_notebooks_are_there():
    assert [p.name[:3] for p in notebook_paths()] == ["01_", "02_", "03_", "04_", "05_"]


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("NOTEBOOKS_FULL", raising=False)
    seconds = execute(path, out=tmp_path / path.name, timeout=300)
    print(f"{path.name}: {seconds:.1f} s")
