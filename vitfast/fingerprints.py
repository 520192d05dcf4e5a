"""Fingerprints of the sources each CUDA kernel family is built from: a hash of the family's .cu files,
the host .cpp files that launch them and take their gradients, and every file under csrc/ those include
(transitively, by "..." includes), so any change that can reach a kernel's launch changes its family's
fingerprint. setup.py computes them at build time and compiles them into
vitfast._C (torch.ops.vitfast.kernel_fingerprints); a GPU sitting's record of which families passed
their tests names the fingerprints it ran, so a changed kernel is known not to have run.

Plain Python with no import of vitfast or torch: setup.py loads this file by its path."""
import glob
import hashlib
import os

# family -> its .cu files and the host code that launches them and takes their gradients (globs under
# csrc/): a change to a launcher's grid or to a C++ autograd node is as unverified as one to a kernel.
# csrc/kernel_gate.h names the same families.
_ATTENTION_HOST = ["attention/attention_cuda.cpp", "attention/attention_autograd.cpp"]
_NORM_HOST = ["norm/layer_norm_cuda.cpp", "norm/layer_norm_autograd.cpp"]
_GEMM_HOST = ["gemm/gemm_cuda.cpp", "gemm/linear_*_cuda.cpp", "gemm/lp_matmul_cuda.cpp", "gemm/linear_*_autograd.cpp"]
_QUANT_HOST = ["quant/quantize_cuda.cpp", "quant/quantize_autograd.cpp"]
FAMILIES = {
    "quantizers": ["quant/block_quantize_cuda.cu", "quant/fixed_point_quantize_cuda.cu",
                   "quant/float_quantize_cuda.cu", *_QUANT_HOST],
    "scaled_cast": ["quant/scaled_cast_cuda.cu", *_QUANT_HOST],
    "attention_mma": ["attention/attention_fwd_cuda.cu", "attention/attention_bwd_cuda.cu", *_ATTENTION_HOST],
    "attention_sm90": ["attention/sm90/*.cu", *_ATTENTION_HOST],
    "layer_norm": ["norm/layer_norm_kernels.cu", *_NORM_HOST],
    "layer_norm_fp8": ["norm/layer_norm_kernels.cu", *_NORM_HOST],  # layer_norm's sources, not its record
    "gemm_mma": ["gemm/mma_gemm.cu", *_GEMM_HOST],
    "gemm_sm90": ["gemm/sm90/linear_*_sm90_*.cu", "gemm/sm90/lp_matmul_sm90.cu", *_GEMM_HOST],
    "fp8_gemm_sm90": ["gemm/sm90/fp8_*_sm90.cu", "gemm/fp8_linear_cuda.cpp"],
}


def includes(path, csrc, seen):
    """path and the files under csrc it includes, transitively, by "..." includes."""
    seen.add(path)
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith('#include "'):
                local = os.path.join(csrc, line.split('"')[1])
                if local not in seen and os.path.isfile(local):
                    includes(local, csrc, seen)
    return seen


def family_files(family, csrc):
    """Every file (absolute path) the family's sources are built from, sorted."""
    files = set()
    for pattern in FAMILIES[family]:
        matches = sorted(glob.glob(os.path.join(csrc, pattern)))
        if not matches:
            raise FileNotFoundError(f"kernel family {family}: no file matches csrc/{pattern}")
        for cu in matches:
            includes(cu, csrc, files)
    return sorted(files)


def fingerprint(family, csrc):
    """The first 16 hex digits of the SHA-256 of the family's files: each one's path under csrc and bytes."""
    h = hashlib.sha256()
    for path in family_files(family, csrc):
        h.update(os.path.relpath(path, csrc).replace(os.sep, "/").encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()[:16]


def fingerprints(csrc):
    """{family: fingerprint} for every family, from the sources under csrc."""
    return {family: fingerprint(family, csrc) for family in FAMILIES}


def header(prints):
    """The C++ header setup.py writes (csrc/generated/kernel_fingerprints.h, git-ignored)."""
    text = ";".join(f"{family}={value}" for family, value in sorted(prints.items()))
    return ("#pragma once\n// Written by setup.py from vitfast/fingerprints.py: each CUDA kernel family's source fingerprint.\n"
            f'#define VITFAST_KERNEL_FINGERPRINTS "{text}"\n')
