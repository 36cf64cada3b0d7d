"""Imports run one way: routes -> translator -> batcher/scheduler -> runner -> engine -> export
-> model. Every module is parsed (not imported), so a lazy import inside a function counts
as much as one at the top of the file."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "export", "service", "bench", "loadtest", "tests")

# Lowest first: a module may import its own layer and the ones before it, never a later one.
# "x.*" is the package x and everything in it; a plain name is that one module, so that a
# new service module has to be placed here on purpose.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("model", ("model.*",)),
    ("export", ("export.*",)),
    ("engine", ("service.engine.*", "service.cpus")),
    (
        "service support",
        (
            "service.errors",
            "service.metrics",
            "service.settings",
            "service.schemas",
            "service.sentences",
            "service.detect",
            "service.markup",
            "service.files",
            "service.ratelimit",
            "service.shutdown",
            "service.openapi",
        ),
    ),
    ("runner", ("service.registry",)),
    ("batcher/scheduler", ("service.batcher", "service.scheduler")),
    ("translator", ("service.translator", "service.compose")),
    ("routes", ("service.routes.*", "service.middleware")),
    ("app", ("service", "service.app", "service.__main__", "service.workers")),
    ("tools and tests", ("bench.*", "loadtest.*", "tests.*")),
]

# Engines are loaded by service.engine.loader.load_engine alone: nothing outside the engine
# package reaches for a backend's own module, but the tests (which check the backends' own
# classes) and a bench engine built on a backend's class.
BACKEND_MODULES = ("service.engine.onnx_engine", "service.engine.torch_engine")
BACKEND_SUBCLASSES = ("bench.torch_nocache",)  # TorchNoCacheEngine(TorchEngine)


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a dotted module name; None if no layer names it."""
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                package = pattern[:-2]
                if module == package or module.startswith(package + "."):
                    return index
            elif module == pattern:
                return index
    return None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            yield module_name(path, root), path


def imported(
    tree: ast.Module, module: str, is_package: bool, known: set[str]
) -> Iterator[tuple[int, str]]:
    """(line, first-party module) for every import in a module's tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1 more
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                # `from service import settings` imports the module service.settings
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in known else target


def violations(root: Path) -> list[str]:
    """Every import against the direction, as `path:line: ...` lines."""
    found = dict(modules(root))
    known = set(found)
    problems = []
    for module, path in found.items():
        own = layer_of(module)
        if own is None:
            problems.append(f"{path.relative_to(root)}: {module} is in no layer of LAYERS")
            continue
        tree = ast.parse(path.read_text(), str(path))
        for line, target in imported(tree, module, path.name == "__init__.py", known):
            if target.split(".")[0] not in PACKAGES:
                continue  # the standard library or a dependency
            where = f"{path.relative_to(root)}:{line}: {module} ({LAYERS[own][0]})"
            layer = layer_of(target)
            if layer is None:
                problems.append(f"{where} imports {target}, which is in no layer")
            elif layer > own:
                problems.append(f"{where} imports {target} ({LAYERS[layer][0]})")
            elif (
                target in BACKEND_MODULES
                and module != "service.engine"
                and not module.startswith(("service.engine.", "tests."))
                and module not in BACKEND_SUBCLASSES
            ):
                problems.append(f"{where} imports {target}: load engines with load_engine")
            elif (
                module.startswith("service.routes.")
                and target.startswith("service.routes.")
                and target != "service.routes.deps"
            ):
                problems.append(f"{where} imports {target}: routes share only routes.deps")
    return problems


def test_imports_run_one_way() -> None:
    problems = violations(REPO)
    assert not problems, "imports against the direction:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages' Python files, copied once; each test adds to one and restores it."""
    root = tmp_path_factory.mktemp("tree")
    for _, path in modules(REPO):
        copy = root / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    assert violations(root) == []
    return root


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        # the cycle this test was written against: export verifying through service engines
        (
            "export/verify.py",
            "from service.engine.base import Engine\n",
            "imports service.engine.base (engine)",
        ),
        ("model/search.py", "def f():\n    import export.artifacts\n", "imports export.artifacts"),
        ("service/registry.py", "from service import batcher\n", "imports service.batcher"),
        (
            "service/registry.py",
            "from service.engine.onnx_engine import load_onnx_engine\n",
            "load engines with load_engine",
        ),
        (
            "bench/ab.py",
            "from service.engine.onnx_engine import load_onnx_engine\n",
            "load engines with load_engine",
        ),
        (
            "loadtest/locustfile.py",
            "from service.engine.torch_engine import TorchEngine\n",
            "load engines with load_engine",
        ),
        (
            "service/routes/libretranslate.py",
            "from service.routes.translate import router\n",
            "routes share only routes.deps",
        ),
        ("service/new_module.py", "", "service.new_module is in no layer"),
    ],
)
def test_a_wrong_way_import_is_caught(
    tree_copy: Path, path: str, source: str, expected: str
) -> None:
    """The check itself, on a copy of the tree with one wrong-way import added."""
    target = tree_copy / path
    before = target.read_text() if target.exists() else None
    target.write_text((before or "") + source)
    try:
        problems = violations(tree_copy)
    finally:
        if before is None:
            target.unlink()
        else:
            target.write_text(before)
    assert len(problems) == 1 and expected in problems[0], problems
