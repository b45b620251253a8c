"""The rooms of docs/layout.md and which way their imports may point, read from the code itself (every import,
those inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("igsend", "schemas", "producers", "workers", "sandbox")

#: room -> the rooms it may import (besides itself); docs/layout.md says the same in words.
ALLOWED = {
    "igsend.core": set(),
    "schemas": {"igsend.core"},
    "producers": {"igsend.core", "schemas"},
    "workers": {"igsend.core", "schemas"},
    "sandbox": set(),
    "igsend.local": {"igsend.core", "schemas", "producers", "workers"},
    "igsend.cli": {"igsend.core", "igsend.local", "schemas", "producers", "workers", "sandbox"},
    "ops": {"igsend.core", "igsend.local", "schemas", "producers", "workers"},
}


def room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "igsend" and len(parts) > 1:
        return f"igsend.{parts[1]}" if parts[1] in ("core", "local", "cli") else None
    return parts[0] if parts[0] in PROJECT or parts[0] == "ops" else None


def imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PROJECT}


def modules() -> dict[str, Path]:
    found = {}
    for top in PROJECT:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "ops").glob("*.py"):
        found[f"ops.{path.stem}"] = path
    return found


def test_every_import_points_the_way_the_layout_allows() -> None:
    broken = []
    for module, path in modules().items():
        here = room(module)
        if here not in ALLOWED:
            continue
        for target in imports(path, module):
            there = room(target)
            if there and there != here and there not in ALLOWED[here]:
                broken.append(f"{module} imports {target} ({here} -> {there})")
    assert broken == []


def test_no_module_imports_itself_through_others() -> None:
    known = modules()
    graph = {module: {target for target in imports(path, module) if target in known and target != module}
             for module, path in known.items()}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in trail:
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in done:
                visit(target, [*trail, target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []
