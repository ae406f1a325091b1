"""The layering contract, checked on the source: imports anywhere in a module count,
inside functions and methods too (lazy imports are how a rule gets broken quietly)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "optiq_tui"
CORE = ("library", "quant", "engine", "eval", "measures")
# (layer folders, modules they must never import, a module's submodules included)
RULES = [
    (CORE, ("textual", "rich", "starlette", "uvicorn")),
    (("ui",), ("mlx", "mlx_lm")),
    # The quantizer shares its math with eval through measures/, not by reaching into eval.
    (("quant", "measures"), ("optiq_tui.eval",)),
]


def imported_modules(source: str) -> set[str]:
    """Full names of every module imported anywhere in ``source``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.add(node.args[0].value)
    return names


def violations(package: Path) -> set[tuple[str, str]]:
    found = set()
    for layers, banned in RULES:
        for layer in layers:
            for path in sorted((package / layer).rglob("*.py")):
                for name in imported_modules(path.read_text(encoding="utf-8")):
                    for rule in banned:
                        if name == rule or name.startswith(rule + "."):
                            found.add((path.relative_to(package).as_posix(), rule))
    return found


def test_layers_hold():
    unexpected = violations(PACKAGE)
    assert not unexpected, f"layering broken: {sorted(unexpected)}"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    fake = tmp_path / "optiq_tui"
    (fake / "engine").mkdir(parents=True)
    (fake / "engine" / "sneaky.py").write_text(
        "def show():\n    from textual.app import App\n    return App\n", encoding="utf-8"
    )
    (fake / "ui").mkdir()
    (fake / "ui" / "screen.py").write_text(
        "class S:\n    def free(self):\n        import mlx.core as mx\n        mx.clear_cache()\n", encoding="utf-8"
    )
    (fake / "quant").mkdir()
    (fake / "quant" / "verify.py").write_text("def kl():\n    from optiq_tui.eval.quality import evaluate\n", encoding="utf-8")
    assert violations(fake) == {("engine/sneaky.py", "textual"), ("ui/screen.py", "mlx"),
                                ("quant/verify.py", "optiq_tui.eval")}


def core_modules_the_ui_imports() -> set[str]:
    """Every optiq_tui module outside ui/ that a ui module imports, at the top or inside a function."""
    found = set()
    for path in (PACKAGE / "ui").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("optiq_tui."):
                if not node.module.startswith("optiq_tui.ui"):
                    found.add(node.module)
    return found


def test_what_the_ui_imports_loads_no_mlx():
    # The ui/ rule sees direct imports only; a core module the UI calls could still pull MLX
    # into the TUI process (it did: the eval screen read reports through eval.quality).
    import subprocess
    import sys

    modules = sorted(core_modules_the_ui_imports())
    assert "optiq_tui.eval.reports" in modules and "optiq_tui.library.provenance" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing what the UI imports loads {out.strip()}"
