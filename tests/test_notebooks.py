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


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_outputs_hold_no_session_noise_and_stay_under_1_mb(path):
    import nbformat

    from notebooks.run import SESSION_NOISE

    assert path.stat().st_size < 1_000_000, f"{path.name}: {path.stat().st_size:,} bytes"
    nb = nbformat.read(path, as_version=4)
    for number, cell in enumerate(nb.cells):
        assert "execution" not in cell.get("metadata", {}), f"{path.name} cell {number}: execution timestamps"
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            noise = [line for line in text.splitlines() if any(n in line for n in SESSION_NOISE)]
            assert not noise, f"{path.name} cell {number}: {noise[0]}"
