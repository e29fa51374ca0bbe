"""The package's import rules (sharded_mix/README.md), read from the source with ``ast``."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sharded_mix"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``sharded_mix`` module a file imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sharded_mix"):
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (PACKAGE.parent / node.module.replace(".", "/") / f"{alias.name}.py").exists()
            )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sharded_mix"))
    return found


MODULES = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_every_module_has_a_folder_that_says_its_role():
    top = {name for name in MODULES if name.count(".") == 1}
    assert top == {
        "sharded_mix.mixing",
        "sharded_mix.streaming",
        "sharded_mix.training",
        "sharded_mix.tools",
        "sharded_mix.datamodule",
        "sharded_mix.sft",
        "sharded_mix.cli",
        "sharded_mix.shards",
        "sharded_mix.config",
    }


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("sharded_mix.mixing.")))
def test_mixing_is_pure(module):
    allowed = ("sharded_mix.mixing", "sharded_mix.shards")
    assert all(target.startswith(allowed) for target in MODULES[module]), MODULES[module]


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("sharded_mix.training.")))
def test_training_imports_only_itself(module):
    assert all(target.startswith("sharded_mix.training") for target in MODULES[module]), MODULES[module]


@pytest.mark.parametrize(
    "module", ["sharded_mix.training.schedules", "sharded_mix.training.stop", "sharded_mix.training.stage_steps"]
)
def test_schedules_and_stops_are_pure(module):
    source = (PACKAGE / "training" / f"{module.rsplit('.', 1)[1]}.py").read_text()
    assert "import torch" not in source and "open(" not in source


@pytest.mark.parametrize("module", ["sharded_mix.shards"])
def test_the_shard_model_imports_nothing_of_ours(module):
    assert MODULES[module] == set()


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("sharded_mix.streaming.")))
def test_streaming_imports_no_tools_and_no_faces(module):
    forbidden = ("sharded_mix.tools", "sharded_mix.datamodule", "sharded_mix.sft", "sharded_mix.cli")
    assert not [target for target in MODULES[module] if target.startswith(forbidden)]


def test_nothing_imports_cli_and_the_training_path_imports_no_tools():
    assert [name for name, targets in MODULES.items() if "sharded_mix.cli" in targets] == []
    training_path = [
        name
        for name in MODULES
        if name.startswith(("sharded_mix.mixing", "sharded_mix.streaming", "sharded_mix.datamodule", "sharded_mix.sft"))
    ]
    assert [
        name for name in training_path if any(target.startswith("sharded_mix.tools") for target in MODULES[name])
    ] == []
