"""The package's import graph, drawn as a building: modules are rooms, layers are floors.

    python benchmarks/import_graph.py [SRC]            # SRC: the folder holding deepstdp/
    python benchmarks/import_graph.py SRC --walk training.train:cfg

Read from the source with `ast`, nothing imported. An arrow is one (importer, imported) pair of
the package's own modules, whatever the number of import statements: module-level, inside a
function and under `if TYPE_CHECKING` alike, since each says that one module knows another.
`from deepstdp.x import y` points at the module deepstdp.x.y when there is one, else at
deepstdp.x. Circles are the strongly connected components; the floor of a module is the longest
path below it in the graph of circles (0: it imports nothing of the package), so every arrow
between circles points down, and an arrow "back up" (to a module on its own floor or higher)
is one inside a circle.

`--walk MODULE.FUNCTION:PARAM` follows a value through the calls (docs/pipeline.md,
"Architecture", says how far the approximation goes): from the function, every call that is
handed the value, or anything computed from it, is followed into the callee's matching
parameter when the callee can be resolved statically (a function of the package named by an
import, a class's constructor, or a method of an object whose class is known from an
annotation or a constructor call). A move is one call from a function of one module into a
function of another (each such pair once); it goes back up when the callee's module is on the
caller's floor or higher.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "deepstdp"


# ------------------------------------------------------------------------------ the graph


def modules(src: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__)."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def imported(node: ast.Import | ast.ImportFrom, here: str,
             mods: dict[str, Path]) -> Iterator[tuple[str, str | None]]:
    """(module, name or None) for each package module the statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name:
                yield name, None
        return
    base = node.module or ""
    if node.level:
        anchor = here if _is_package(here, mods) else here.rpartition(".")[0]
        for _ in range(node.level - 1):
            anchor = anchor.rpartition(".")[0]
        base = f"{anchor}.{base}" if base else anchor
    if base not in mods:
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield (sub, None) if sub in mods else (base, alias.name)


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[m].update(t for t, _ in imported(node, m, mods) if t != m)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
            out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Floor of each module: the longest path below its circle in the graph of circles."""
    comp_of = {m: i for i, comp in enumerate(circles(graph)) for m in comp}
    below: dict[int, set[int]] = {}
    for m, targets in graph.items():
        below.setdefault(comp_of[m], set()).update(comp_of[t] for t in targets
                                                   if comp_of[t] != comp_of[m])
    level: dict[int, int] = {}

    def height(c: int) -> int:
        if c not in level:
            level[c] = 1 + max((height(d) for d in below.get(c, ())), default=-1)
        return level[c]

    return {m: height(c) for m, c in comp_of.items()}


def folders(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph one level up: a room is a stage folder (all its modules, its sub-folders
    included) or a module at the package's root; an arrow joins two different rooms when any
    module of one imports any module of the other. The package itself (deepstdp/__init__,
    which holds the version and imports nothing) is left out."""
    def room(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2])

    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        if a == PACKAGE:
            continue
        out.setdefault(room(a), set()).update(room(b) for b in targets
                                              if b != PACKAGE and room(b) != room(a))
    return out


def short(name: str) -> str:
    return name.removeprefix(f"{PACKAGE}.")


def figure(graph: dict[str, set[str]]) -> str:
    """The building as text: floors from the top, the rooms on each, then the circles and the
    arrows that point back up."""
    level = floors(graph)
    n_arrows = sum(len(t) for t in graph.values())
    back = sorted((a, b) for a, t in graph.items() for b in t if level[b] >= level[a])
    rings = [c for c in circles(graph) if len(c) > 1]
    top = max(level.values())
    lines = [f"{len(graph)} rooms on {top + 1} floors, {n_arrows} arrows, {len(back)} back up, "
             f"{len(rings)} circle(s)"]
    for f in range(top, -1, -1):
        rooms = sorted(short(m) for m in graph if level[m] == f)
        lines.append(f"floor {f:2d}: {', '.join(rooms)}")
    for ring in rings:
        lines.append("circle: " + ", ".join(short(m) for m in ring))
    for a, b in back:
        lines.append(f"back up: {short(a)} -> {short(b)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the walk


@dataclass
class Module:
    name: str
    tree: ast.Module
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    """Top-level functions and methods ('Class.method')."""
    classes: set[str] = field(default_factory=set)
    names: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """Names bound by its module-level imports: name -> (module, attribute or None)."""


def load(mods: dict[str, Path]) -> dict[str, Module]:
    out = {}
    for m, path in mods.items():
        mod = Module(m, ast.parse(path.read_text()))
        for node in mod.tree.body:
            if isinstance(node, ast.FunctionDef):
                mod.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                mod.classes.add(node.name)
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        mod.functions[f"{node.name}.{item.name}"] = item
        mod.names = bindings(mod.tree.body, m, mods)
        out[m] = mod
    return out


def bindings(nodes: list[ast.AST], here: str,
             mods: dict[str, Path]) -> dict[str, tuple[str, str | None]]:
    """Names bound by the `from ... import` statements among `nodes` (and in their `if`
    blocks): name -> (module, attribute, or None for a module)."""
    out: dict[str, tuple[str, str | None]] = {}
    for node in nodes:
        if isinstance(node, ast.If):
            out.update(bindings(node.body, here, mods))
        if isinstance(node, ast.ImportFrom):
            for alias, target in zip(node.names, imported(node, here, mods), strict=False):
                out[alias.asname or alias.name] = target
    return out


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _annotated(node: ast.expr | None) -> str | None:
    """The class an annotation names (`X`, `X | None`, 'X')."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split("|")[0].strip() or None
    if isinstance(node, ast.BinOp):
        return _annotated(node.left)
    return node.id if isinstance(node, ast.Name) else None


def _assigned(node: ast.AST) -> tuple[list[ast.expr], ast.expr | None]:
    """(targets, value) of an assignment-like statement, else ([], None)."""
    if isinstance(node, ast.Assign):
        return node.targets, node.value
    if isinstance(node, ast.AnnAssign | ast.NamedExpr):
        return [node.target], node.value
    if isinstance(node, ast.For):
        return [node.target], node.iter
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return [node.optional_vars], node.context_expr
    return [], None


class Walk:
    """The calls a value passes through (see the module docstring)."""

    def __init__(self, src: Path):
        self.mods = modules(src)
        self.code = load(self.mods)
        self.level = floors(edges(self.mods))
        self.moves: list[tuple[str, str]] = []
        self.seen: set[tuple[str, str, str]] = set()

    def _class(self, mod: Module, name: str | None,
               local: dict[str, tuple[str, str | None]]) -> tuple[str, str] | None:
        """(module, class) that `name` names in `mod`, if a class of the package."""
        if name in mod.classes:
            return mod.name, name
        m, attr = local.get(name) or mod.names.get(name) or (None, None)
        return (m, attr) if m and attr in self.code[m].classes else None

    def _callee(self, mod: Module, func: ast.expr, types: dict[str, tuple[str, str]],
                local: dict[str, tuple[str, str | None]]) -> tuple[str, str, bool] | None:
        """(module, function, whether the receiver is its first parameter) of a call."""
        if isinstance(func, ast.Name):
            if func.id in mod.functions:
                return mod.name, func.id, False
            cls = self._class(mod, func.id, local)
            if cls:
                return cls[0], f"{cls[1]}.__init__", True
            m, attr = local.get(func.id) or mod.names.get(func.id) or (None, None)
            return (m, attr, False) if m and attr in self.code[m].functions else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            base = func.value.id
            cls = types.get(base) or self._class(mod, base, local)
            if cls:
                return cls[0], f"{cls[1]}.{func.attr}", True
            m, attr = local.get(base) or mod.names.get(base) or (None, None)
            if m and attr is None and func.attr in self.code[m].functions:
                return m, func.attr, False
        return None

    def visit(self, module: str, function: str, param: str) -> None:
        """Follow the value, passed as `param`, through `function` and what it calls."""
        if (module, function, param) in self.seen:
            return
        self.seen.add((module, function, param))
        mod = self.code[module]
        fn = mod.functions[function]
        local = bindings(list(ast.walk(fn)), module, self.mods)  # its own imports
        types = {}
        for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]:
            cls = self._class(mod, _annotated(a.annotation), local)
            if cls:
                types[a.arg] = cls
        if "." in function:
            types["self"] = types["cls"] = (module, function.split(".")[0])
        tainted = {param}
        for _ in range(2):  # names computed from the value carry it
            for node in ast.walk(fn):
                targets, value = _assigned(node)
                if value is not None and _names(value) & tainted:
                    for t in targets:
                        tainted |= _names(t)
                        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                            cls = self._class(mod, value.func.id, local)
                            types.update({n: cls for n in _names(t) if cls})
        calls = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Call)),
                       key=lambda n: (n.lineno, n.col_offset))
        for call in calls:
            self._follow(mod, function, call, tainted, types, local)

    def _follow(self, mod: Module, function: str, call: ast.Call, tainted: set[str],
                types: dict[str, tuple[str, str]],
                local: dict[str, tuple[str, str | None]]) -> None:
        target = self._callee(mod, call.func, types, local)
        if target is None or target[1].split(".")[0].endswith("Error"):
            return  # not the package's, or an error message that quotes the value
        m, f, bound = target
        if f not in self.code[m].functions and not f.endswith(".__init__"):
            return  # inherited from outside the package (nn.Module.eval, ...)
        receiver = isinstance(call.func, ast.Attribute) and bool(_names(call.func.value)
                                                                 & tainted)
        fn = self.code[m].functions.get(f)
        names = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args]] if fn else []
        offset = 1 if bound and names[:1] in (["self"], ["cls"]) else 0
        params = [names[i + offset] for i, arg in enumerate(call.args)
                  if _names(arg) & tainted and i + offset < len(names)]
        for kw in call.keywords:
            if _names(kw.value) & tainted:
                params += [kw.arg] if kw.arg else names[offset:]  # **kwargs: any of them
        if receiver and offset:
            params.append(names[0])
        if not (params or receiver or (fn is None and any(
                _names(a) & tainted for a in [*call.args, *(k.value for k in call.keywords)]))):
            return
        move = (f"{mod.name}.{function}", f"{m}.{f}")
        if m != mod.name and move not in self.moves:
            self.moves.append(move)
        for p in params if fn is not None else ():
            self.visit(m, f, p)

    def report(self, start: str) -> str:
        where = [start, *(b for _, b in self.moves)]
        entered = {self._module_of(q) for q in where}
        back = [(a, b) for a, b in self.moves
                if self.level[self._module_of(b)] >= self.level[self._module_of(a)]]
        lines = [f"walk of {short(start)}: {len(entered)} modules, {len(self.moves)} moves, "
                 f"{len(back)} back up", "  modules: " + ", ".join(sorted(map(short, entered)))]
        lines += [f"  {short(a)} -> {short(b)}" + ("   (back up)" if (a, b) in back else "")
                  for a, b in self.moves]
        return "\n".join(lines)

    def _module_of(self, qualified: str) -> str:
        while qualified not in self.mods:
            qualified = qualified.rpartition(".")[0]
        return qualified


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", nargs="?", default=str(Path(__file__).resolve().parents[1] / "src"))
    p.add_argument("--walk", action="append", default=[], metavar="MODULE.FUNCTION:PARAM",
                   help="e.g. training.train:cfg (module relative to the package)")
    args = p.parse_args(argv)
    src = Path(args.src)
    graph = edges(modules(src))
    print(figure(graph))
    print()
    print("folders and root modules:")
    print(figure(folders(graph)))
    for spec in args.walk:
        where, _, param = spec.partition(":")
        module, _, function = where.rpartition(".")
        walk = Walk(src)
        full = f"{PACKAGE}.{module}"
        walk.visit(full, function, param)
        print()
        print(walk.report(f"{full}.{function}"))


if __name__ == "__main__":
    main()
