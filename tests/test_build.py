"""The installed build: the extension imports, its schemas are registered, and on a machine with a
CUDA toolkit the CUDA kernels were compiled (for sm_80 and sm_90, with PTX) even without a GPU."""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

import vitfast
from tests.values import find_cuobjdump

OPS = ["float_quantize", "fixed_point_quantize", "block_quantize", "attention_fwd", "attention_bwd", "layer_norm",
       "layer_norm_backward", "layer_norm_fp8", "linear_gelu", "gelu_grad_bias", "linear_residual", "lp_matmul",
       "scaled_cast", "fp8_linear"]
# tensor-free questions about the build, answered anywhere
QUERIES = ["gemm_path", "fp8_path", "sm90_kernels_built", "fp8_promotion_interval", "sm90_config", "sm90_configs",
           "gemm_refusal", "attention_path", "kernel_fingerprints", "kernel_toolchain", "gpu_key", "set_kernel_records",
           "kernel_verdict", "build_flavor"]


def toolkit_present():
    return torch.version.cuda is not None and os.environ.get("VITFAST_SKIP_CUDA", "0") != "1" and (
        shutil.which("nvcc") or os.path.isfile("/usr/local/cuda/bin/nvcc"))


@pytest.mark.parametrize("op", OPS)
def test_every_operator_has_a_cpu_kernel(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"vitfast::{op}", "CPU")


@pytest.mark.parametrize("op", OPS)
def test_cuda_kernels_built_wherever_the_toolkit_is(op):
    if not toolkit_present():
        pytest.skip("no CUDA toolkit or a CPU-only torch: CPU kernels only")
    assert vitfast.has_cuda_kernels()
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"vitfast::{op}", "CUDA")


def test_cuda_binary_holds_sm80_sm90_and_ptx():
    cuobjdump = find_cuobjdump()
    # the build's own flags say which architectures it was made for (a prebuilt one may be carried here)
    built_for = json.loads(torch.ops.vitfast.kernel_toolchain()).get("nvcc_flags", [])
    if not (toolkit_present() and cuobjdump) or "-gencode=arch=compute_80,code=sm_80" not in built_for:
        pytest.skip("needs cuobjdump and a build for the default VITFAST_CUDA_ARCHS (80;90)")
    lib = vitfast._C.__file__
    elf = subprocess.run([cuobjdump, "--list-elf", lib], capture_output=True, text=True, check=True).stdout
    ptx = subprocess.run([cuobjdump, "--list-ptx", lib], capture_output=True, text=True, check=True).stdout
    assert "sm_80" in elf and "sm_90" in elf, elf
    assert "sm_90" in ptx or "compute_90" in ptx, ptx


def test_sm90_gemms_built_where_cutlass_headers_are():
    import importlib.util

    if not toolkit_present() or os.environ.get("VITFAST_CUDA_ARCHS"):
        pytest.skip("needs the CUDA toolkit and the default VITFAST_CUDA_ARCHS (80;90)")
    assert torch.ops.vitfast.sm90_kernels_built() == (importlib.util.find_spec("cutlass_library") is not None)


CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")


def system_includes(path):
    """The <...> headers of path and of every file under csrc/ it includes (fingerprints.includes, the
    closure the kernel fingerprints hash)."""
    from vitfast.kernels import fingerprints
    found = []
    for local in sorted(fingerprints.includes(path, CSRC, set())):
        with open(local) as f:
            found += [line.split("<")[1].split(">")[0] for line in map(str.strip, f) if line.startswith("#include <")]
    return found


def test_no_cuda_source_parses_torch_headers():
    """Every nvcc device pass over ATen/torch headers costs ~40 s on the 2-core build machine, so the
    .cu files hold kernels and plain launchers only; the torch-facing halves are *_cuda.cpp files."""
    cu = [os.path.join(d, f) for d, _, files in os.walk(CSRC) for f in files if f.endswith(".cu")]
    assert len(cu) >= 9, cu
    for path in cu:
        heavy = [h for h in system_includes(path) if h.startswith(("ATen/", "torch/"))]
        assert not heavy, f"{os.path.relpath(path, CSRC)} includes {heavy}"


def test_every_cpp_file_is_compiled_with_torchs_headers_precompiled():
    """setup.py precompiles torch's headers once for the .cpp files (about half of each one's compile time),
    and GCC skips a precompiled header built with other flags, silently but for a warning in the build's
    log: each .cpp's command in this clone's build must name the header, its .gch must be there, and GCC
    must take it for one of them. Where this clone built the extension with GCC (pip install [-e] .)."""
    from torch.utils.cpp_extension import check_compiler_is_gcc, get_cxx_compiler

    builds = glob.glob(os.path.join(os.path.dirname(CSRC), "build", "temp.*", "build.ninja"))
    ninja = shutil.which("ninja")
    if not (builds and ninja and check_compiler_is_gcc(get_cxx_compiler())):
        pytest.skip("no GCC build of the extension in this clone (or no ninja to read it)")
    folder = os.path.dirname(max(builds, key=os.path.getmtime))
    commands = subprocess.run([ninja, "-C", folder, "-t", "commands"], capture_output=True, text=True,
                              check=True).stdout.splitlines()
    cpp = [shlex.split(c) for c in commands if re.search(r" -c \S+\.cpp ", c)]
    assert len(cpp) >= 20, commands[:5]
    for cmd in cpp:
        source = next(a for a in cmd if a.endswith(".cpp"))
        assert "-include" in cmd, f"{source} parses torch's headers itself"
        assert os.path.isfile(cmd[cmd.index("-include") + 1] + ".gch"), source
    # GCC takes it: one file's command, checking only (a precompiled header GCC cannot use is a warning)
    cmd = cpp[-1]
    outputs = {cmd.index("-MMD"), cmd.index("-MF"), cmd.index("-MF") + 1, cmd.index("-o"), cmd.index("-o") + 1}
    check = [a for i, a in enumerate(cmd) if i not in outputs] + ["-fsyntax-only", "-Werror=invalid-pch"]
    done = subprocess.run(check, cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "invalid-pch" not in done.stderr, done.stderr[-3000:]


def test_schemas_are_declared_once_in_the_vitfast_namespace():
    for op in OPS:
        schema = str(getattr(torch.ops.vitfast, op).default._schema)
        assert schema.startswith(f"vitfast::{op}(Tensor ")


def test_every_operator_keeps_autocast_out():
    registered = sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("vitfast::"))
    assert registered == sorted(OPS + QUERIES)
    for op in OPS:
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"vitfast::{op}", key), (op, key)


def test_import_does_not_need_a_gpu():
    out = subprocess.run([sys.executable, "-c", "import vitfast, torch; print(vitfast.has_cuda_kernels()); "
                          "print(vitfast.quant.quantize(torch.ones(2), 'fp8_e4m3').tolist())"],
                         capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, check=True)
    assert out.stdout.splitlines()[-1] == "[1.0, 1.0]"


def test_check_command_passes():
    out = subprocess.run([sys.executable, "-m", "vitfast.check", "--size", "4096"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all operators agree with their references" in out.stdout


def test_another_build_loads_by_its_path_and_says_which_it_is():
    """VITFAST_EXTENSION loads a build of the extension from a path (a GPU sitting's debug-sync .so, made
    with VITFAST_DEBUG_SYNC=1), and build_flavor() says which build answers; a path that is no build is
    the one-line ImportError, not a traceback deep in torch."""
    code = "import vitfast, torch; print(torch.ops.vitfast.build_flavor(), vitfast.ops.float_quantize(torch.ones(2), 4, 3).tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "VITFAST_EXTENSION": vitfast._C.__file__})
    assert out.stdout.split() == ["release", "[1.0,", "1.0]"]
    bad = subprocess.run([sys.executable, "-c", "import vitfast"], capture_output=True, text=True,
                         env={**os.environ, "VITFAST_EXTENSION": os.path.join(CSRC, "kernel_gate.h")})
    assert bad.returncode != 0 and "vitfast's compiled extension (vitfast._C) is missing" in bad.stderr


def test_a_prebuilt_extension_installs_as_it_is(tmp_path):
    """VITFAST_PREBUILT installs a build made elsewhere (our GPU sittings install the one built here for
    the GPU machine's torch): the installed package holds those very bytes and answers with that build's
    fingerprints, nothing compiled; a path that is no file is one line naming the variable."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prebuilt = tmp_path / "_C.abi3.so"
    shutil.copyfile(vitfast._C.__file__, prebuilt)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--target", str(site), root]
    done = subprocess.run(pip, capture_output=True, text=True, env={**os.environ, "VITFAST_PREBUILT": str(prebuilt)},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (site / "vitfast" / "_C.abi3.so").read_bytes() == prebuilt.read_bytes()
    code = "import vitfast, torch; print(vitfast.__file__); print(torch.ops.vitfast.kernel_fingerprints())"
    env = {k: v for k, v in os.environ.items() if k != "VITFAST_EXTENSION"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(site)}).stdout.splitlines()
    assert out == [str(site / "vitfast" / "__init__.py"), torch.ops.vitfast.kernel_fingerprints()]
    bad = subprocess.run(pip, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VITFAST_PREBUILT": str(tmp_path / "none.so")})
    assert bad.returncode != 0
    assert f"VITFAST_PREBUILT: no file '{tmp_path / 'none.so'}'; expected a built vitfast/_C.abi3.so" in bad.stdout + bad.stderr
