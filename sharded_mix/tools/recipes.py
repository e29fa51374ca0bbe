"""The recipes shipped in ``recipes.yaml``: per paper source, its datasets, record template, aliases and filters."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from sharded_mix.tools.prepare_inputs import DatasetSpec
from sharded_mix.tools.records import RowFilter

_KEYS = {"description", "datasets", "text_field", "template", "aliases", "where"}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    datasets: tuple[DatasetSpec, ...] = ()
    text_field: str | None = None
    template: str | None = None
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()
    where: tuple[RowFilter, ...] = ()


@functools.cache
def load_recipes() -> dict[str, Recipe]:
    """Every recipe in the packaged ``recipes.yaml``, by name."""
    text = resources.files("sharded_mix.tools").joinpath("recipes.yaml").read_text(encoding="utf-8")
    return {name: _recipe(name, spec) for name, spec in yaml.safe_load(text).items()}


def get_recipe(name: str) -> Recipe:
    recipes = load_recipes()
    if name not in recipes:
        raise ValueError(f"--recipe {name!r} is not a recipe; pick one of {', '.join(recipes)}")
    return recipes[name]


def _recipe(name: str, spec: dict[str, Any]) -> Recipe:
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"recipe {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    datasets = tuple(
        DatasetSpec(
            d["name"], d.get("config"), d.get("split", "train"), tuple(d.get("data_files", ())), d.get("data_dir")
        )
        for d in spec.get("datasets", ())
    )
    aliases = tuple((key, tuple(values)) for key, values in (spec.get("aliases") or {}).items())
    return Recipe(
        name,
        " ".join(str(spec.get("description", "")).split()),
        datasets,
        spec.get("text_field"),
        spec.get("template"),
        aliases,
        tuple(RowFilter.parse(text) for text in spec.get("where", ())),
    )
