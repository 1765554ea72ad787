"""Every teaching notebook runs from top to bottom in a clean kernel, with its default (small-run) settings.

The notebooks check their own claims with asserts, so a failing claim fails here. Runs they train go to a
temporary folder (NOTEBOOK_RUNS); the committed notebooks are not modified.
"""

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
