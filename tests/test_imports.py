"""The packages import one way only (issue #34): the bottom floor (`atomicfile`, `cli`) < `layers` < `mobilenet` <
`data`, `evaluation` < `training` < `deploy` < the commands and `bench`; and `deploy` (what serves a model) does not
import `training` either: the model card tells it how to feed a model. Read from the source's import statements,
the lazy ones inside functions included."""

import ast
from pathlib import Path

from tests.conftest import REPO

FLOORS = {"atomicfile": 0, "cli": 0, "layers": 1, "mobilenet": 2, "data": 3, "evaluation": 3, "training": 4}
FLOORS["deploy"] = 5
COMMANDS = {"train", "evaluate", "predict", "export", "serve", "quantize", "bench"}
BESIDE = {"deploy": {"training"}}  # imports that the floors allow but the design does not


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_no_package_imports_one_above_it_or_beside_it():
    wrong = []
    for package, floor in FLOORS.items():
        files = (
            [REPO / f"{package}.py"] if (REPO / f"{package}.py").is_file() else sorted((REPO / package).rglob("*.py"))
        )
        assert files, package
        for path in files:
            for name in imports(path):
                upward = name in FLOORS and name != package and FLOORS[name] >= floor
                if name in COMMANDS or upward or name in BESIDE.get(package, ()):
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, wrong


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    probe = tmp_path / "m.py"
    probe.write_text("def f():\n    from training.config import RunConfig\n")
    assert imports(probe) == {"training"}
