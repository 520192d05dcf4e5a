"""A header of csrc/ compiled for the host and loaded with ctypes: how the tests run a device function's
arithmetic on the CPU (test_gelu_poly.py, test_gelu_grad.py)."""
import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def host_library(folder, name, source, *flags):
    """`source` (C++17 with csrc/ on the include path, extra compiler `flags`) built as <folder>/<name>.so and
    loaded; the test is skipped where the machine has no C++ compiler."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the header for the host")
    (folder / f"{name}.cpp").write_text(source)
    lib = folder / f"{name}.so"
    subprocess.run([cxx, "-O2", "-std=c++17", *flags, "-shared", "-fPIC", f"-I{CSRC}", str(folder / f"{name}.cpp"),
                    "-o", str(lib)], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(lib))
