"""Every teaching notebook runs from top to bottom in a clean kernel, with its default (small-run) settings.

The notebooks check their own claims with asserts, so a failing claim fails here. Runs they train go to a
temporary folder (NOTEBOOK_RUNS); the committed notebooks are not modified.
"""

import pytest

from notebooks.run import execute, notebook_paths


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("NOTEBOOKS_FULL", raising=False)
    committed = path.read_bytes()
    seconds = execute(path, out=tmp_path / path.name, timeout=300)
    print(f"{path.name}: {seconds:.1f} s")
    assert path.read_bytes() == committed, f"executing {path.name} changed the committed notebook"
    assert (tmp_path / path.name).stat().st_size > 0
