"""Fingerprints of library code: what invalidates a cache or a model when meshsr changes.

For a set of root modules R, the *closure* C(R) is the smallest set of meshsr modules
that contains R and, with every module m, each meshsr module that m imports statically
and every package on the way to it (``import meshsr.a.b`` runs ``meshsr/__init__.py``
and ``meshsr/a/__init__.py``).  The fingerprint is the hex digest

    F(R) = sha256( name(m1) LF h(m1) LF  name(m2) LF h(m2) LF  ... ),   h(m) = hex sha256(canon(m)),

over the modules m1 < m2 < ... of C(R) sorted by name.  canon(m) is the module's syntax
tree without the docstrings of the module, its classes and functions, written out field
by field without line numbers and without empty (``None`` or ``[]``) fields.  Hence
comments, docstrings and formatting never change F; any other edit of a module in C(R)
does, and so does adding, removing or renaming one; an edit outside C(R) does not.
Leaving out empty fields keeps F equal across Python versions that only added optional
syntax (3.12's ``type_params``).

What counts as an import: ``import meshsr.x`` and ``from meshsr.x import y`` (and
relative imports) anywhere in a module, inside functions too, since those run; ``y`` is
followed when it is a module.  Imports under ``if TYPE_CHECKING:`` never run, so they
are not followed.  Imports built at run time (``importlib.import_module``) and
third-party code (numpy, torch, ...) are not part of F.

Files are found through ``importlib.util.find_spec("meshsr")``'s search locations (the
meshsr that jobs import, e.g. a copy first on ``PYTHONPATH``) and only ever parsed,
never imported, so fingerprinting :mod:`meshsr.learn.training` does not import torch.
Parsed modules are memoised per process by content, so a repeated fingerprint costs
one read of each file in the closure.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "meshsr"

# The library code behind each workflow output, by the rule that writes it: the roots of
# the import closure whose fingerprint is the rule's `code` param (rules/common.smk) and,
# for pair caches, the `code` recorded in the cache (meshsr.cache.build).
OUTPUT_CODE: dict[str, tuple[str, ...]] = {
    "example_data": ("meshsr.example.solver", "meshsr.mesh.bundle"),
    "ingest_mesh": ("meshsr.mesh.sources",),
    "pair_cache": ("meshsr.cache.build",),
    "training_batches": ("meshsr.learn.training",),
    "train_model": ("meshsr.learn.training",),
    "evaluate_model": ("meshsr.evaluate.metrics",),
    "plot_model": ("meshsr.evaluate.plots",),
    "upsample": ("meshsr.learn.upsample",),
}

Import = tuple[str, ...]  # (level, module, *names): ("0", "meshsr.x") or ("1", "x", "y", ...)
# sha256 of a module's source bytes -> what _parse found in it
_PARSED: dict[str, tuple[str, tuple[Import, ...]]] = {}


def _search_locations() -> list[Path]:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"cannot locate the {PACKAGE} package")
    return [Path(p) for p in spec.submodule_search_locations]


def _module_file(name: str, locations: list[Path]) -> Path | None:
    """The file of meshsr module ``name``, as the import system finds it (a package before a module)."""
    parts = name.split(".")[1:]
    for root in locations:
        candidates = [root.joinpath(*parts, "__init__.py")]
        if parts:
            candidates.append(root.joinpath(*parts[:-1], f"{parts[-1]}.py"))
        for path in candidates:
            if path.is_file():
                return path
    return None


_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _canon(node: ast.AST, out: list[str], imports: list[Import], live: bool = True) -> None:
    """Append canon(node) to ``out`` and the imports that can run (``live``) to ``imports``; one pass."""
    kind = type(node)
    out += (kind.__name__, "(")
    if live and kind is ast.Import:
        imports += [("0", alias.name) for alias in node.names]
    elif live and kind is ast.ImportFrom:
        imports.append((str(node.level), node.module or "", *(alias.name for alias in node.names)))
    for name, value in ast.iter_fields(node):
        if value is None or value == []:
            continue
        if name == "body" and kind in _DOC_OWNERS and isinstance(value[0], ast.Expr):
            first = value[0].value
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                value = value[1:]  # the docstring
        out += (name, "=")
        if isinstance(value, list):
            inner = live and not (kind is ast.If and name == "body" and _is_type_checking(node.test))
            out.append("[")
            for item in value:
                if isinstance(item, ast.AST):
                    _canon(item, out, imports, inner)
                else:
                    out.append(repr(item))
                out.append(",")
            out.append("]")
        elif isinstance(value, ast.AST):
            _canon(value, out, imports, live)
        else:
            out.append(repr(value))
        out.append(",")
    out.append(")")


def _parse(path: Path) -> tuple[str, tuple[Import, ...]]:
    """(hex sha256 of canon(m), imports) of the module in ``path``, memoised by content."""
    source = path.read_bytes()
    key = hashlib.sha256(source).hexdigest()
    if key not in _PARSED:
        out: list[str] = []
        imports: list[Import] = []
        _canon(ast.parse(source, filename=str(path)), out, imports)
        _PARSED[key] = (hashlib.sha256("".join(out).encode()).hexdigest(), tuple(imports))
    return _PARSED[key]


def _with_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _targets(module: str, is_package: bool, entry: Import, locations: list[Path]) -> list[str]:
    """The meshsr modules that one import statement of ``module`` runs."""
    level, base, *names = entry
    if level != "0":
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (int(level) - 1)]
        base = ".".join(package + ([base] if base else []))
    if base != PACKAGE and not base.startswith(PACKAGE + "."):
        return []
    found = _with_packages(base)
    found += [f"{base}.{n}" for n in names if n != "*" and _module_file(f"{base}.{n}", locations)]
    return found


def _closure(roots: list[str], locations: list[Path]) -> dict[str, str]:
    """Module name -> digest of canon(m) for every module of the closure."""
    todo = [m for root in roots for m in _with_packages(root)]
    digests: dict[str, str] = {}
    while todo:
        name = todo.pop()
        if name in digests:
            continue
        path = _module_file(name, locations)
        if path is None:
            if name in roots:
                raise ModuleNotFoundError(f"no module {name} under {', '.join(map(str, locations))}")
            continue  # an import that would fail at run time, or an optional one: nothing to fingerprint
        digest, imports = _parse(path)
        digests[name] = digest
        for entry in imports:
            todo += _targets(name, path.name == "__init__.py", entry, locations)
    return digests


def code_closure(roots: Iterable[str]) -> list[str]:
    """The sorted module names of C(roots): what :func:`code_fingerprint` hashes."""
    return sorted(_closure(list(roots), _search_locations()))


def _tree_digest(locations: list[Path]) -> str:
    """sha256 over the names and bytes of every ``.py`` file of the package: changes with any edit, add or removal."""
    digest = hashlib.sha256()
    for root in locations:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                with open(path, "rb") as fh:
                    digest.update(f"{path}\n".encode() + fh.read())
    return digest.hexdigest()


# (roots, package tree digest) -> F(roots): the parse asks for a handful of roots once per job
_FINGERPRINTS: dict[tuple[tuple[str, ...], str], str] = {}


def code_fingerprint(roots: Iterable[str]) -> str:
    """Hex sha256 F(roots) of the library code that ``roots`` run (module docstring)."""
    roots, locations = tuple(roots), _search_locations()
    key = (roots, _tree_digest(locations))
    if key not in _FINGERPRINTS:
        digests = _closure(list(roots), locations)
        text = "".join(f"{name}\n{digests[name]}\n" for name in sorted(digests))
        _FINGERPRINTS[key] = hashlib.sha256(text.encode()).hexdigest()
    return _FINGERPRINTS[key]


def output_fingerprint(rule: str) -> str:
    """Fingerprint of the code behind the outputs of workflow rule ``rule`` (:data:`OUTPUT_CODE`)."""
    if rule not in OUTPUT_CODE:
        raise KeyError(f"no library code declared for rule {rule!r}; known: {', '.join(OUTPUT_CODE)}")
    return code_fingerprint(OUTPUT_CODE[rule])
