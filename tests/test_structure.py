"""The structure stays: import rules between packages, read from the source with ``ast``.

Each node is a package of ``headwater`` (``bus``, ``features``, ...) or a top-level
module (``config``, ``stack``, ...); the root package itself is ``headwater``. Every
import counts, those under ``TYPE_CHECKING`` and inside functions included.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "headwater"
ROOT = "headwater"
#: Modules of pure helpers that any package may import.
HELPERS = {
    "_duration",
    "_url",
    "_time",
    "_extras",
    "_jsonguard",
    "errors",
    "_idsearch",
    "_sqlite_pages",
}
#: Who may import the HTTP layer and the command line.
MAY_IMPORT_GATEWAY = {"gateway", "stack", "cli", "__main__"}
MAY_IMPORT_CLI = {"cli", "__main__"}


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != ROOT:
        return None
    if len(parts) == 1:
        return ROOT
    return parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from headwater import errors`` imports the module ``headwater.errors``.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (SRC.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    SRC.parent / candidate.replace(".", "/")
                ).is_dir():
                    found.add(candidate)
    return found


def _graph() -> dict[str, dict[str, set[str]]]:
    """node -> imported node -> the modules of ``node`` that import it."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in SRC.rglob("*.py"):
        source = _node(_module_name(path))
        assert source is not None
        for target in _imports(path):
            node = _node(target)
            if node is None or node == source:
                continue
            if node == ROOT and target != ROOT:
                continue  # "headwater.x" resolved above; the bare root only for __version__
            edges[source][node].add(_module_name(path))
    return edges


GRAPH = _graph()


def _cycle_from(start: str) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in GRAPH.get(node, {}):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_graph_is_read() -> None:
    # The walk finds the known edges: a checker that reads nothing passes everything.
    assert "bus" in GRAPH["runtime"]
    assert "application" in GRAPH["gateway"]
    assert "errors" in GRAPH["contract"]


@pytest.mark.parametrize("node", sorted(GRAPH))
def test_no_cycle_between_packages(node: str) -> None:
    cycle = _cycle_from(node)
    assert cycle is None, " -> ".join(cycle or [])


def test_only_the_entry_points_import_the_http_layer_and_the_cli() -> None:
    wrong = {
        f"{source} imports {target} ({', '.join(sorted(modules))})"
        for source, targets in GRAPH.items()
        for target, modules in targets.items()
        if (target == "gateway" and source not in MAY_IMPORT_GATEWAY)
        or (target == "cli" and source not in MAY_IMPORT_CLI)
    }
    assert not wrong, wrong


def test_the_sdk_imports_nothing_of_the_server() -> None:
    allowed = {"client", "wire", "errors", "_time"}
    assert set(GRAPH["client"]) <= allowed, GRAPH["client"]
    assert set(GRAPH["wire"]) <= set(), GRAPH["wire"]


def test_the_contract_imports_only_errors_and_helpers() -> None:
    assert set(GRAPH["contract"]) <= HELPERS, GRAPH["contract"]


def test_ports_do_not_import_the_domains_above_them() -> None:
    # The bus, the stores and the control plane are below erasure, the runtime and the
    # consumers: they never reach up.
    above = {"erasure", "runtime", "features", "archive", "batch", "application", "ingest"}
    for port in ("bus", "online", "dedupe", "control", "ratelimit"):
        assert not set(GRAPH[port]) & above, (port, GRAPH[port])


def test_the_runtime_sits_above_bus_and_erasure() -> None:
    assert {"bus", "erasure"} <= set(GRAPH["runtime"])
    assert "runtime" not in GRAPH["bus"]
    assert "runtime" not in GRAPH["erasure"]


def test_no_hooks_are_looked_up_by_name() -> None:
    # Hooks are declared on base classes (Consumer, ErasureParticipant, Bus): never found
    # with getattr/hasattr, which mypy cannot check.
    offenders = []
    for package in ("runtime", "erasure", "application"):
        for path in (SRC / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "getattr(" in text or "hasattr(" in text:
                offenders.append(str(path.relative_to(SRC)))
    assert not offenders, offenders
