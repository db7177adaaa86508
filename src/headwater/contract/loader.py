"""Read event type definitions from the YAML or TOML files teams keep in a repository.

One file per owning team::

    team: reviews
    event_types:
      rating:
        surfaces: [web, ios, android, reviews]
        item: true
        freshness_budget: 10m
        payload:
          rating: {type: int, required: true, min: 1, max: 5}
          text: {type: string, max_length: 2000}
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from headwater.contract.definition import EventTypeDefinition, definition_from_mapping
from headwater.errors import ContractDefinitionError

__all__ = [
    "default_definitions",
    "definitions_from_document",
    "load_definitions",
    "load_yaml",
    "parse_document",
]

_SUFFIXES = (".yaml", ".yml", ".toml")


class _StrictLoader(yaml.SafeLoader):
    """YAML without aliases (a few bytes of anchors can expand to gigabytes) and without
    a key given twice in one mapping (which one counts would be a guess)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in a contract", None
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # SafeLoader's own check refuses what cannot be a key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """A YAML (or JSON) document, refusing aliases and duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def parse_document(text: str, where: str, *, toml: bool = False) -> dict[str, EventTypeDefinition]:
    """Definitions from the text of one team's file."""
    try:
        data: Any = tomllib.loads(text) if toml else load_yaml(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ContractDefinitionError(f"{where}: cannot parse: {exc}") from None
    return definitions_from_document(data, where)


def definitions_from_document(data: Any, where: str) -> dict[str, EventTypeDefinition]:
    """Definitions from a parsed document: ``{"team": ..., "event_types": {...}}``."""
    if not isinstance(data, dict):
        raise ContractDefinitionError(f"{where}: expected a mapping with team and event_types")
    unknown = sorted(set(data) - {"team", "event_types"})
    if unknown:
        raise ContractDefinitionError(f"{where}: unknown top-level keys {unknown}")
    team = data.get("team")
    if not isinstance(team, str) or not team:
        raise ContractDefinitionError(f"{where}: 'team' (the owning team) is required")
    types = data.get("event_types") or {}
    if not isinstance(types, dict):
        raise ContractDefinitionError(f"{where}: 'event_types' must be a mapping")
    return {
        str(name): definition_from_mapping(str(name), raw, team, where)
        for name, raw in types.items()
    }


def load_definitions(path: str | Path) -> dict[str, EventTypeDefinition]:
    """All definitions in a file or a directory of files; a type defined twice is an error."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in _SUFFIXES)
        if not files:
            raise ContractDefinitionError(f"{root}: no .yaml, .yml or .toml files")
    elif root.is_file():
        files = [root]
    else:
        raise ContractDefinitionError(f"{root}: no such file or directory")
    found: dict[str, EventTypeDefinition] = {}
    origin: dict[str, Path] = {}
    for file in files:
        for name, definition in parse_document(
            file.read_text(encoding="utf-8"), str(file), toml=file.suffix == ".toml"
        ).items():
            if name in found:
                raise ContractDefinitionError(
                    f"{file}: event type {name!r} is already defined in {origin[name]}"
                )
            found[name] = definition
            origin[name] = file
    return found


def default_definitions() -> dict[str, EventTypeDefinition]:
    """The contracts headwater ships for six teams.

    The teams are web, ios, android, search, checkout and reviews.
    """
    found: dict[str, EventTypeDefinition] = {}
    folder = resources.files("headwater.contract") / "defaults"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(_SUFFIXES):
            found.update(parse_document(entry.read_text(encoding="utf-8"), entry.name))
    return found
