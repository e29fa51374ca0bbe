"""The package's import rules (sharded_mix/README.md), read from the source with ``ast``."""

import ast
import re
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
                or (PACKAGE.parent / node.module.replace(".", "/") / alias.name / "__init__.py").exists()
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
        "sharded_mix.cli_data",
        "sharded_mix.cli_runs",
        "sharded_mix.cli_configs",
        "sharded_mix.shards",
        "sharded_mix.config",
        "sharded_mix.data_config",
        "sharded_mix.litgpt_bridge",
    }


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("sharded_mix.mixing.")))
def test_mixing_is_pure(module):
    allowed = ("sharded_mix.mixing", "sharded_mix.shards")
    assert all(target.startswith(allowed) for target in MODULES[module]), MODULES[module]


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("sharded_mix.training.")))
def test_training_imports_only_itself_and_the_bridge(module):
    allowed = ("sharded_mix.training", "sharded_mix.litgpt_bridge")
    assert all(target.startswith(allowed) for target in MODULES[module]), MODULES[module]


@pytest.mark.parametrize("module", ["sharded_mix.training.schedules", "sharded_mix.mixing.stop"])
def test_schedules_and_stops_are_pure(module):
    source = (PACKAGE.parent / f"{module.replace('.', '/')}.py").read_text()
    assert "import torch" not in source and "open(" not in source


LITGPT_INTERNALS = re.compile(r"_getframe|getsource|litgpt\.pretrain|litgpt\.finetune|litgpt\.__main__")
"""Frame walks, source reads, LitGPT's training loops and its command table: what only the bridge may touch."""


def test_only_the_bridge_touches_litgpt_internals():
    touching = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if LITGPT_INTERNALS.search(path.read_text())
    )
    assert touching and all(path.startswith("sharded_mix/litgpt_bridge/") for path in touching), touching


def test_the_bridge_is_the_one_version_check():
    bridge = "\n".join(path.read_text() for path in sorted((PACKAGE / "litgpt_bridge").glob("*.py")))
    entry_points = [
        "def run_context(",
        "def attach_scheduled_lr(",
        "def pretrain_parameters(",
        "def attach_to_training_loop(",
        "def patch_document_attention(",
    ]
    for name in entry_points:
        body = bridge.split(name, 1)[1].split("\ndef ", 1)[0]
        assert "require_supported_litgpt()" in body, name
    versions = [path.name for path in PACKAGE.rglob("*.py") if 'version("litgpt")' in path.read_text()]
    assert versions == ["version.py"]


@pytest.mark.parametrize("module", ["sharded_mix.shards"])
def test_the_shard_model_imports_nothing_of_ours(module):
    assert MODULES[module] == set()


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("sharded_mix.streaming.")))
def test_streaming_imports_no_tools_and_no_faces(module):
    forbidden = ("sharded_mix.tools", "sharded_mix.datamodule", "sharded_mix.sft", "sharded_mix.cli")
    assert not [target for target in MODULES[module] if target.startswith(forbidden)]


def is_cli(name: str) -> bool:
    """``sharded_mix.cli`` (the parser and ``main``) and the ``sharded_mix.cli_*`` modules of its commands."""
    return name == "sharded_mix.cli" or name.startswith("sharded_mix.cli_")


def test_nothing_imports_cli_and_the_training_path_imports_no_tools():
    assert [name for name, targets in MODULES.items() if not is_cli(name) and any(map(is_cli, targets))] == []
    training_path = [
        name
        for name in MODULES
        if name.startswith(("sharded_mix.mixing", "sharded_mix.streaming", "sharded_mix.datamodule", "sharded_mix.sft"))
    ]
    assert [
        name for name in training_path if any(target.startswith("sharded_mix.tools") for target in MODULES[name])
    ] == []
