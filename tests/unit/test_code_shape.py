"""Code shape of the package: short functions (<= 60 lines) and modules (<= 400 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ucd"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:line name (N lines)`` for every function or method, nested ones too, over ``limit``."""
    found = []
    for path in _modules(root):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def long_modules(root: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    """``file (N lines)`` for every module over ``limit`` lines."""
    found = []
    for path in _modules(root):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            found.append(f"{path.relative_to(root.parent)} ({n} lines)")
    return found


def test_the_checks_see_the_package_and_catch_offenders(tmp_path):
    assert len(_modules(PACKAGE)) > 20  # the package itself is scanned, not an empty folder
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    (pkg / "sub" / "m.py").write_text(
        f"def ok():\n{body}\n\nclass C:\n    async def too_long(self):\n{body.replace('    ', '        ')}"
        "        return 1\n"
    )
    (pkg / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert long_functions(pkg) == ["pkg/sub/m.py:64 too_long (61 lines)"]
    assert long_modules(pkg) == [f"pkg/big.py ({MAX_MODULE_LINES + 1} lines)"]


def test_functions_are_short():
    offenders = long_functions(PACKAGE)
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_modules_are_short():
    offenders = long_modules(PACKAGE)
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def ray_imports(root: Path) -> list[str]:
    """``file:line`` of every ``import ray``/``from ray ...`` outside ``pipelines/``: model,
    training, evaluation and serving code stays plain Python and PyTorch."""
    found = []
    for path in _modules(root):
        if "pipelines" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "ray" or n.startswith("ray.") for n in names):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_ray_is_imported_only_by_the_pipelines(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "pipelines").mkdir(parents=True)
    (pkg / "pipelines" / "job.py").write_text("import ray\n")
    (pkg / "model.py").write_text("def f():\n    from ray import train\n")
    assert ray_imports(pkg) == ["pkg/model.py:2"]  # the check itself catches a stray import
    offenders = ray_imports(PACKAGE)
    assert not offenders, "Ray imported outside ucd/pipelines:\n" + "\n".join(offenders)
