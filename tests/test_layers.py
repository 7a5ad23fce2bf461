"""The package's layering, written down: the measurement core does no I/O, and the lab (the
reference avatar, its publisher and worker, the local LiveKit server) is never imported by the
product."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "syncmon"
# what the pure measurement core must not touch: media I/O, LiveKit, event loops, exposition
NOT_IN_ANALYSIS = {"livekit", "asyncio", "aiohttp", "prometheus_client", "opentelemetry", "av"}
# the command line's lab commands (reference render|publish|avatar, demo) load the lab lazily
LAB_USERS = {"cli/lab.py"}


def imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def modules(under: str = "") -> list[Path]:
    return sorted((PKG / under).rglob("*.py"))


def test_the_import_reader_resolves_relative_imports() -> None:
    got = imports(PKG / "reference" / "publisher.py")
    assert "syncmon.errors" in got and "syncmon.reference.avatar" in got


@pytest.mark.parametrize("path", modules("analysis"), ids=lambda p: p.name)
def test_analysis_does_no_io(path: Path) -> None:
    bad = {m for m in imports(path) if m.split(".")[0] in NOT_IN_ANALYSIS}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_product_never_imports_the_lab() -> None:
    offenders = {
        str(p.relative_to(PKG)): sorted(m for m in imports(p) if m.startswith("syncmon.reference"))
        for p in modules()
        if p.relative_to(PKG).parts[0] != "reference"
        and p.relative_to(PKG).as_posix() not in LAB_USERS
    }
    assert {k: v for k, v in offenders.items() if v} == {}
