"""The Hopper attention kernels' barrier protocols, checked on the CPU: the skeletons the kernels are
compiled from (csrc/attention/sm90/attention_protocol.h) compiled again with g++ against a recording
model of sm_90 mbarriers and TMA (tests/ops/protocol/barrier_model.h), whose roles run under seeded
random schedules and every schedule within one delay of round-robin, for every configuration the
kernels instantiate and the walks of a persistent CTA over 1 .. 4 x SMs + 3 work items on 132 and
114 SMs. The checker must find the defect of the first GPU run (the whole-head forward's idle consumer
releasing stages ahead of their phase) in the old protocol, and each injected class of defect."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "tests", "ops", "protocol", "check_protocols.cpp")
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="needs a C++17 compiler (g++)")

# CI's settings: 8 random schedules per walk and configuration (2 on the longest walks), and the
# search within one delay of round-robin on walks of up to two work items (about 10 s in all).
CI_ARGS = ["--seeds", "8", "--bound", "1", "--max-items", "2"]


def build(tmp_path_factory, name, *defines):
    out = str(tmp_path_factory.mktemp("protocol") / name)
    cmd = [CXX, "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{os.path.join(ROOT, 'csrc')}",
           f"-I{os.path.dirname(SOURCE)}", SOURCE, "-o", out] + [f"-D{d}" for d in defines]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    return build(tmp_path_factory, "check_protocols")


@pytest.fixture(scope="module")
def old_checker(tmp_path_factory):
    """The skeletons with the whole-head forward's protocol as the first GPU run had it."""
    return build(tmp_path_factory, "check_protocols_old", "VITFAST_PROTOCOL_OLD_IDLE_RELEASE")


def run(binary, *args):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=600)


def failing_configs(out):
    return [m.group(1) for m in re.finditer(r"^FAIL (\S+ d=\d+ \S+ N=\d+)", out, re.M)]


@pytest.mark.parametrize("kernel", ["fwd", "fwd_long", "bwd"])
def test_protocol_of_every_sm90_attention_configuration_holds(checker, kernel):
    r = run(checker, "--kernel", kernel, *CI_ARGS)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    configs = re.findall(r"^ok   ", r.stdout, re.M)
    # fwd: 5 head dims x 4 key tiles x 2 lengths; fwd_long: 5 x 13 lengths; bwd: 5 head dims x 12 lengths
    # from 1 to 4,096 (whole heads or key groups, as sm90_bwd_key_groups splits each)
    assert len(configs) == {"fwd": 40, "fwd_long": 65, "bwd": 60}[kernel], r.stdout
    assert "PASSED" in r.stdout


def test_protocol_check_finds_the_first_gpu_runs_defect_and_only_there(old_checker):
    """Without the idle consumer's waits the 192-key tile (N in 129..192, a CTA with three tiles whose
    second halves all lie past N, as at (B, H, N) = (33, 5, 129)) releases a stage ahead of its
    phase; every other configuration keeps its protocol."""
    r = run(old_checker, "--kernel", "fwd", *CI_ARGS)
    assert r.returncode == 1, r.stdout[-4000:]
    failed = failing_configs(r.stdout)
    assert sorted(failed) == sorted(f"fwd d={d} keys=192 N={n}" for d in (32, 64, 80, 96, 128) for n in (129, 192))
    assert "a release ahead of its phase" in r.stdout
    assert "consumer 1 releases empty[0] for phase 1 while it is in phase 0" in r.stdout


def test_protocol_check_finds_the_defect_by_the_hardware_rules_alone(old_checker):
    """The barriers carry no phase an arrival means: by the parity rules alone the old protocol either
    deadlocks (the producer's first wait sees a completed phase of the wrong parity) or refills a stage
    a consumer still reads."""
    r = run(old_checker, "--kernel", "fwd", "--hardware-only", *CI_ARGS)
    assert r.returncode == 1
    assert {c.split(" N=")[0] for c in failing_configs(r.stdout)} == {f"fwd d={d} keys=192" for d in (32, 64, 80, 96, 128)}
    assert re.search(r"deadlock|refills .* while consumer \d reads it", r.stdout)


@pytest.mark.parametrize("fault, message", [
    ("producer_skips_empty_wait", "a stage refilled before every consumer released it"),
    ("consumer_skips_full_wait", "before any fill of it|without having waited|refills"),
    ("expect_fewer_bytes", "more bytes landed|landed after"),
    ("expect_more_bytes", "deadlock"),
    ("skip_store_wait", "while its TMA store still reads it"),
    ("consumer_skips_release", "partial phase|deadlock"),
])
@pytest.mark.parametrize("kernel", ["fwd", "fwd_long", "bwd"])
def test_protocol_check_catches_each_injected_defect(checker, kernel, fault, message):
    r = run(checker, "--kernel", kernel, "--fault", fault, "--seeds", "3", "--bound", "-1", "--sms", "132",
            "--dims", "64,128")
    assert r.returncode == 1, r.stdout[-2000:]
    assert re.search(message, r.stdout), r.stdout[-2000:]


def test_bad_arguments_get_one_line(checker):
    for args, text in ((["--kernel", "fwd2"], "--kernel: expected fwd, fwd_long, bwd or all, got fwd2"),
                       (["--fault", "nope"], "--fault: unknown fault nope"),
                       (["--seeds"], "--seeds: a value is expected")):
        r = run(checker, *args)
        assert r.returncode == 2 and r.stderr.strip() == text, (args, r.stderr)


def cutlass_include():
    import importlib.util
    spec = importlib.util.find_spec("cutlass_library")
    for root in (spec.submodule_search_locations or []) if spec else []:
        include = os.path.join(root, "source", "include")
        if os.path.isfile(os.path.join(include, "cutlass", "cutlass.h")):
            return include
    return None


NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.isfile("/usr/local/cuda/bin/nvcc") else None)


@pytest.mark.skipif(NVCC is None or cutlass_include() is None, reason="needs nvcc and CUTLASS's headers")
def test_kernel_policies_drive_every_skeleton_and_only_the_debug_build_traps(tmp_path):
    """sm90_sync.cuh's policies compiled with the three skeletons for sm_90a (tests/ops/protocol/
    sync_probe.cu): without VITFAST_DEBUG_SYNC no trap or printf call is left in the code; with it each
    protocol has its bounded waits' trap."""
    from tests.values import find_cuobjdump
    tool = find_cuobjdump()
    if tool is None:
        pytest.skip("needs cuobjdump (the toolkit's or triton's)")
    sass = {}
    for name, defines in (("release", []), ("debug", ["-DVITFAST_DEBUG_SYNC"])):
        cubin = str(tmp_path / f"{name}.cubin")
        subprocess.run([NVCC, "-cubin", os.path.join(os.path.dirname(SOURCE), "sync_probe.cu"), "-o", cubin,
                        "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-gencode=arch=compute_90a,code=sm_90a",
                        f"-I{os.path.join(ROOT, 'csrc')}", f"-I{cutlass_include()}", *defines],
                       check=True, capture_output=True, text=True)
        sass[name] = subprocess.run([tool, "-sass", cubin], check=True, capture_output=True, text=True).stdout
    assert sass["release"].count("Function : ") == 3
    assert "TRAP" not in sass["release"] and "CALL.ABS" not in sass["release"]
    assert sass["debug"].count("TRAP") >= 3 and "CALL.ABS" in sass["debug"]  # the trap and vprintf
