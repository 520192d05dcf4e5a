"""fp8_linear's overlapped mainloop order (csrc/gemm/fp8_promotions.h, the function the Hopper kernel
calls), compiled with g++ and run against a model of wgmma's commit groups for 0 to 64 k-tiles
(tests/ops/protocol/check_fp8_promotions.cpp): every sum read only once its group completed, added in
k order, each stage released once, a group always queued behind the one being added, nothing in flight
at the end. The checker must catch each injected defect, and CUTLASS's own order (drain, then add)
fails only the overlap rule."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "tests", "ops", "protocol", "check_fp8_promotions.cpp")
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="needs a C++17 compiler (g++)")


def check(tmp_path, *defines):
    binary = str(tmp_path / "check_fp8_promotions")
    subprocess.run([CXX, "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{os.path.join(ROOT, 'csrc')}", SOURCE,
                    "-o", binary] + [f"-D{d}" for d in defines], check=True, capture_output=True, text=True)
    return subprocess.run([binary], capture_output=True, text=True, timeout=60)


def test_the_overlapped_order_holds_for_every_k_tile_count(tmp_path):
    r = check(tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
    assert len(re.findall(r"^ok k=\d+$", r.stdout, re.M)) == 65 and r.stdout.rstrip().endswith("PASSED")


@pytest.mark.parametrize("defect, first_failure, message", [
    (1, 2, "k-tile 1's sum read while its group runs"),
    (2, 3, "issued into fragment 1 while k-tile 1's sum was unread"),
    (3, 2, "with no group queued behind it"),
])
def test_the_model_catches_each_defect(tmp_path, defect, first_failure, message):
    r = check(tmp_path, f"FP8_PROMOTIONS_DEFECT={defect}")
    assert r.returncode == 1
    failures = re.findall(r"^FAIL k=(\d+): (.*)$", r.stdout, re.M)
    assert failures and int(failures[0][0]) == first_failure and message in failures[0][1], r.stdout[-1500:]
    # counts below the first failure are not affected by the defect
    assert re.findall(r"^ok k=(\d+)$", r.stdout, re.M)[:first_failure] == [str(k) for k in range(first_failure)]
