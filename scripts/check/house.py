#!/usr/bin/env python3
"""House rules that code review alone would miss, checked and printed (exit 1 on a breach).

- no import circle among protocol/, peer/ and coordinator/ modules (every import
  counted, also those under TYPE_CHECKING and inside functions);
- protocol/ imports neither peer/ nor coordinator/; peer/ never imports coordinator/;
  each protocol subpackage imports only what its docstring allows (:data:`ALLOWED`);
- peer/ and coordinator/ hold no if/elif (or match, or ternary) over round-mode names and
  no ``isinstance`` on round classes: which mode a round is stays in protocol.rounds;
- no module over 450 lines outside scripts/ and tests/;
- no class in peer/ or coordinator/ over 300 lines.

Usage: ``python scripts/check/house.py`` from anywhere.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "peer", "coordinator")
MAX_MODULE, MAX_CLASS = 450, 300
ALLOWED = {  # protocol subpackage -> the protocol subpackages it may import
    "wire": set(),
    "crypto": {"wire"},
    "policy": {"wire"},
    "prompts": {"wire"},
    "learning": {"wire", "crypto", "policy"},
    "rounds": {"wire", "crypto", "learning", "policy"},
    "audit": {"wire", "crypto", "learning", "policy", "prompts", "rounds"},
}
MODE_NAMES = {"clear", "secagg", "vss", "replicated"}
ROUND_CLASS_SUFFIXES = ("Round", "PeerRound")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (``from . import x`` counts as ``pkg.x``)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] not in PACKAGES:
                continue
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            found.update(subs if subs and len(subs) == len(node.names) else [mod, *subs])
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer_breaches(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in graph.items():
        top = mod.split(".")
        for dep in deps:
            d = dep.split(".")
            if top[0] == "protocol" and d[0] != "protocol":
                out.append(f"{mod} imports {dep}")
            if top[0] == "peer" and d[0] == "coordinator":
                out.append(f"{mod} imports {dep}")
            if top[0] == d[0] == "protocol" and len(top) > 2 and len(d) > 1 and \
                    top[1] in ALLOWED and d[1] != top[1] and d[1] not in ALLOWED[top[1]]:
                out.append(f"{mod} imports {dep} (protocol.{top[1]} may import "
                           f"{sorted(ALLOWED[top[1]]) or 'nothing else'})")
    return out


def _mentions_mode(node: ast.AST) -> bool:
    """A comparison or match whose other side is a mode-name literal, or a test on a
    ``.mode`` attribute compared with a literal."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Compare):
            sides = [sub.left, *sub.comparators]
            lits = [s.value for s in sides if isinstance(s, ast.Constant)]
            lits += [e.value for s in sides if isinstance(s, ast.Tuple | ast.Set | ast.List)
                     for e in s.elts if isinstance(e, ast.Constant)]
            if any(v in MODE_NAMES for v in lits if isinstance(v, str)):
                return True
            attrs = [s.attr for s in sides if isinstance(s, ast.Attribute)]
            if "mode" in attrs and lits:
                return True
    return False


def mode_switches(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.IfExp | ast.While) and _mentions_mode(node.test):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: branches on a round mode")
        if isinstance(node, ast.Match) and any(
                isinstance(c.pattern, ast.MatchValue) and isinstance(c.pattern.value, ast.Constant)
                and c.pattern.value.value in MODE_NAMES for c in node.cases):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: matches on a round mode")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and \
                len(node.args) == 2:
            kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            for k in kinds:
                name = k.attr if isinstance(k, ast.Attribute) else getattr(k, "id", "")
                if name.endswith(ROUND_CLASS_SUFFIXES):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: isinstance on round "
                               f"class {name}")
    return out


def long_classes(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [(f"{path.relative_to(ROOT)}:{n.name}", n.end_lineno - n.lineno + 1)
            for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]


def main() -> int:
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    failures = 0

    def report(title: str, problems: list[str]) -> None:
        nonlocal failures
        print(f"{'ok  ' if not problems else 'FAIL'} {title}")
        for p in problems:
            print(f"       {p}")
        failures += bool(problems)

    edges = sum(len(d) for d in graph.values())
    report(f"no import circle ({len(graph)} modules, {edges} imports)",
           [" -> ".join(c) for c in cycles(graph)])
    report("layers: protocol/ imports only itself, by its subpackages' rules; peer/ never "
           "imports coordinator/", layer_breaches(graph))
    drivers = [p for n, p in known.items() if n.split(".")[0] in ("peer", "coordinator")]
    report("peer/ and coordinator/: no branch over mode names, no isinstance on round classes",
           [m for p in drivers for m in mode_switches(p)])
    sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in known.items()),
                   reverse=True)
    report(f"no module over {MAX_MODULE} lines (largest: {sizes[0][1]}, {sizes[0][0]})",
           [f"{n}: {lines} lines" for lines, n in sizes if lines > MAX_MODULE])
    classes = sorted((c for p in drivers for c in long_classes(p)), key=lambda c: -c[1])
    report(f"no class in peer/ or coordinator/ over {MAX_CLASS} lines (largest: "
           f"{classes[0][0]}, {classes[0][1]})",
           [f"{n}: {lines} lines" for n, lines in classes if lines > MAX_CLASS])
    for name in ("peer/daemon.py:PeerDaemon", "coordinator/service.py:Coordinator"):
        lines = dict(classes).get(name)
        print(f"       {name}: {lines} lines")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
