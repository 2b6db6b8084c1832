"""The import graph of salvusctl/: no cycle, and declarations that load no service code.

A cycle held together by function-local imports works until someone moves one of them to the top
of its module; then the host fails to start with a half-initialised module.  Reading every
import with C{ast} (top-level and inside functions) catches the cycle when it is written.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.host import components
from tests.helpers import REPO, childEnv

PACKAGE = os.path.join(REPO, "salvusctl")


def _moduleName(path: str) -> str:
    relative = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def _modules() -> dict[str, str]:
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                found[_moduleName(path)] = path
    return found


def _skipped(tree: ast.AST) -> set[int]:
    """Nodes under C{if TYPE_CHECKING:} (never run) and C{if __name__ == "__main__":} (run only as
    the program, as module C{__main__}, which no other module imports)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        test = node.test
        typing_only = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        as_main = (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                   and test.left.id == "__name__")
        if typing_only or as_main:
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def importGraph() -> dict[str, set[str]]:
    """Module -> the salvusctl modules it imports anywhere in its body."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        skipped = _skipped(tree)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                out.update(known(a.name) for a in node.names if a.name.startswith("salvusctl"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if not base.startswith("salvusctl"):
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    out.add(full if full in modules else known(base))
        out.discard(None)
        out.discard(module)
        graph[module] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


class ImportGraphTests(SynchronousTestCase):
    """salvusctl/ imports in one direction only."""

    def test_noCycle(self):
        """No set of modules imports one another in a ring, counting imports inside functions."""
        graph = importGraph()
        self.assertGreater(len(graph), 100)  # the walk found the package
        rings = cycles(graph)
        described = ["; ".join(f"{m} -> {sorted(graph[m] & set(ring))}" for m in ring) for ring in rings]
        self.assertEqual(described, [])

    def test_findsACycle(self):
        """The check itself sees a ring, and a module that imports only itself is none."""
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}), [["a", "b", "c"]])
        self.assertEqual(cycles({"a": set(), "b": {"a"}}), [])

    def test_functionLocalImportsCount(self):
        """An import inside a method is an edge: the host's declarations reach the service
        declarations through C{Host.deploy}, and the builder through C{Host.build}."""
        graph = importGraph()
        self.assertIn("salvusctl.supervisor.deploy", graph["salvusctl.host.declaring"])
        self.assertIn("salvusctl.host.building", graph["salvusctl.host.declaring"])


class DeclarationImportTests(SynchronousTestCase):
    """A .tac file that imports a declaration loads no service: reading a config (for a diff, in a
    child process) stays cheap, and a declaration cannot come to depend on what it configures."""

    def test_declarationsLoadNoService(self):
        """Each declaration module of the components table, imported alone in a fresh interpreter,
        loads neither Twisted's service machinery nor a reactor."""
        modules = sorted({target.partition(":")[0] for row in components.COMPONENTS
                          for target in row.declares} | {"salvusctl.host", "salvusctl.host.model"})
        probe = ("import importlib, sys\n"
                 "bad = []\n"
                 "for name in sys.argv[1:]:\n"
                 "    for loaded in [m for m in sys.modules if m.startswith(('salvusctl', 'twisted'))]:\n"
                 "        del sys.modules[loaded]\n"
                 "    importlib.import_module(name)\n"
                 "    for heavy in ('twisted.application.service', 'twisted.internet.reactor'):\n"
                 "        if heavy in sys.modules:\n"
                 "            bad.append(name + ' loads ' + heavy)\n"
                 "print('\\n'.join(bad))\n")
        result = subprocess.run([sys.executable, "-c", probe, *modules], capture_output=True,
                                text=True, env=childEnv(), timeout=120, cwd=REPO)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "")
