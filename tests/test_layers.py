"""The package's layers depend one way: splitting (with the other top-level helpers) -> data -> model -> train
-> eval -> jobs -> cli.

A module may import its own layer and the ones below it, never one above (read from the sources with `ast`,
so lazy imports inside functions count too).
"""

import ast
from pathlib import Path

import hierpt

LAYERS = [("splitting", "storage_env", "validation", "ray_session", "console"), ("data",), ("model",), ("train",),
          ("eval",), ("jobs",), ("cli",)]  # fmt: skip
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
PACKAGE = Path(hierpt.__file__).parent


def layer_of(module: str) -> str:
    """`hierpt.model.hat` -> `model`; `hierpt.cli` -> `cli`."""
    return module.split(".")[1]


def imported_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "hierpt":  # from hierpt import cli
            found += [f"hierpt.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            found.append(node.module)
    return [name for name in found if name.startswith("hierpt.")]


def test_every_module_belongs_to_a_layer():
    modules = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")}
    assert modules - {"__init__"} <= set(RANK), sorted(modules - set(RANK))


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module in imported_modules(path):
            if RANK[layer_of(module)] > RANK[own]:
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not upward, "\n".join(upward)
