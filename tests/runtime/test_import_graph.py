"""The house has no import cycles (lazy imports included), and the runtime stands on its own.

Every ``import`` / ``from … import`` statement anywhere in a module (module level, inside functions,
classes, try blocks; only ``if TYPE_CHECKING:`` blocks are left out) is an edge of the graph over the
modules of ``zsplg_fast`` and ``zsplg_runtime`` together; a strongly connected set of more than one
module is a cycle. The runtime (``runtime/zsplg_runtime``) may import only the standard library, numpy,
PIL, onnxruntime, and (lazily, inside functions) tensorrt and cuda-python.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"zsplg_fast": ROOT / "zsplg_fast", "zsplg_runtime": ROOT / "runtime" / "zsplg_runtime"}
RUNTIME_ALLOWED = {"numpy", "PIL", "onnxruntime", "zsplg_runtime"}
RUNTIME_LAZY_ONLY = {"tensorrt", "cuda"}  # the [trt] extra: imported inside functions only
# not a dependency, used where installed (zsplg-fast's install): module -> the one runtime module that may
# import it, inside a function, skipping its check on ImportError (ort_session's onnx.checker)
RUNTIME_OPTIONAL = {"onnx": "zsplg_runtime.ort"}


def modules() -> dict[str, Path]:
    out = {}
    for pkg, root in PACKAGES.items():
        for p in root.rglob("*.py"):
            rel = p.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join((pkg, *parts))] = p
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def imports_of(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported dotted name, at module level?) for every import statement of the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    top = {id(n) for n in tree.body}
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name if is_pkg else name.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            out += [(f"{base}.{a.name}", id(node) in top) for a in node.names] + [(base, id(node) in top)]
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    g: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for target, _ in imports_of(m, p):
            t = target
            while t and t not in mods:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != m and t not in PACKAGES and not m.startswith(t + ".") and not t.startswith(m + "."):
                g[m].add(t)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in g:
        if start in index:
            continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_walker_finds_a_lazy_cycle() -> None:
    """The check itself: a cycle closed only by an import inside a function is found."""
    g = {"a": {"b"}, "b": {"c"}, "c": set(), "d": set()}
    assert cycles(g) == []
    g["c"].add("a")
    assert cycles(g) == [["a", "b", "c"]]
    lazy = imports_of("zsplg_fast.deploy.infer", PACKAGES["zsplg_fast"] / "deploy" / "infer.py")
    assert ("zsplg_fast.export.tensorrt.build_engine", False) in lazy  # inside _trt()


def test_no_import_cycles_in_zsplg_fast_and_zsplg_runtime() -> None:
    g = graph()
    assert len([m for m in g if m.startswith("zsplg_runtime")]) >= 15
    assert cycles(g) == []


def test_zsplg_runtime_imports_only_the_stdlib_numpy_pil_and_engine_libraries() -> None:
    bad: list[str] = []
    for m, p in modules().items():
        if not m.startswith("zsplg_runtime"):
            continue
        for target, top_level in imports_of(m, p):
            head = target.split(".")[0]
            if head == "" or head in sys.stdlib_module_names or head in RUNTIME_ALLOWED:
                continue
            if head in RUNTIME_LAZY_ONLY and not top_level:
                continue
            if RUNTIME_OPTIONAL.get(head) == m and not top_level:
                continue
            bad.append(f"{m}: {target}{' (module level)' if top_level else ''}")
    assert bad == []


def test_loading_a_deploy_folder_does_not_import_torch(tiny_deploy: Path, tmp_path: Path) -> None:
    """In a fresh interpreter: import zsplg_runtime, load a deploy folder, predict, run the infer loop."""
    code = (
        "import sys, numpy as np\n"
        "import zsplg_runtime\n"
        "from zsplg_runtime.infer import infer\n"
        f"seg = zsplg_runtime.Segmenter.load({str(tiny_deploy)!r})\n"
        "lab = seg.predict(np.zeros((20, 24, 3), np.uint8))\n"
        "assert lab.shape == (20, 24) and lab.dtype == np.uint8\n"
        f"infer({str(tiny_deploy)!r}, {str(tiny_deploy / 'img.png')!r}, {str(tmp_path / 'out')!r},"
        " overlays=True)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'segment_anything', 'open_clip', 'zsplg_fast')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HEAVY []" in r.stdout
    assert (tmp_path / "out" / "labels" / "img.png").is_file()
