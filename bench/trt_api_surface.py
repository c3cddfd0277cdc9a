"""Extract the Python names of each TensorRT line from NVIDIA's bindings wheels (no GPU, no TensorRT).

The ``tensorrt-cu12-bindings`` wheels are small (~1.3 MB) and hold the compiled pybind11 module
``tensorrt_bindings/tensorrt.so``; every class, enum value, method and property name it registers is a
NUL-terminated string in that file, so ``strings -n 3`` on it lists the whole Python API surface. This
script does that in Python for each line and writes one sorted name per line to
``tests/export/trt_api/<line>.txt``, which ``tests/export/test_trt_api_surface.py`` checks the code
against.

The linker merges string tails (``INT8`` is stored only as the end of ``UINT8``), so consumers must
match names as line **suffixes**, never as whole lines.

Regenerate (needs the package index; nothing is installed)::

    python bench/trt_api_surface.py            # every line below
    python bench/trt_api_surface.py --line 11  # one line
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# line → pip requirement of the bindings wheel (10.3 = JetPack 6's TensorRT)
LINES: dict[str, str] = {
    "10.3": "tensorrt-cu12-bindings==10.3.*",
    "10": "tensorrt-cu12-bindings>=10,<11",
    "11": "tensorrt-cu12-bindings>=11,<12",
}
OUT = Path(__file__).resolve().parents[1] / "tests" / "export" / "trt_api"
_PRINTABLE = re.compile(rb"[\x20-\x7e]{3,}")  # what `strings -n 3` prints
_TAIL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def python_names(so_bytes: bytes) -> list[str]:
    """The identifier that ends each string of a shared object, sorted, without C++ mangled symbols.

    Tails, not whole strings: a name such as ``bool`` may be stored only as the end of a longer string
    (``...<bool``) that the linker merged it into.
    """
    found = set()
    for m in _PRINTABLE.findall(so_bytes):
        tail = _TAIL.search(m.decode("ascii"))
        if tail and len(tail.group()) >= 3 and not tail.group().startswith("_Z"):
            found.add(tail.group())
    return sorted(found)


def download(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``dest``; returns its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {requirement!r} gave no wheel")
    return wheels[0]


def surface(line: str, requirement: str, out_dir: Path = OUT) -> Path:
    """Download the line's bindings wheel, extract its names, write ``<out_dir>/<line>.txt``."""
    with tempfile.TemporaryDirectory(prefix="trt-api.") as tmp:
        wheel = download(requirement, Path(tmp))
        version = wheel.name.split("-")[1]
        with zipfile.ZipFile(wheel) as z:
            so = next(n for n in z.namelist() if n.endswith("tensorrt_bindings/tensorrt.so"))
            names = python_names(z.read(so))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{line}.txt"
    header = f"# tensorrt-cu12-bindings {version}: names in tensorrt.so (match as line suffixes)\n"
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(header + "\n".join(names) + "\n", encoding="ascii")
    tmp_path.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--line", choices=sorted(LINES), action="append", help="default: every line")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    for line in args.line or list(LINES):
        path = surface(line, LINES[line], args.out)
        print(f"{line}: {path} ({sum(1 for _ in path.open()) - 1} names)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
