"""Fingerprints of what each CUDA kernel family is compiled from: its translation units as C++ tokens
(comments and layout dropped), and the toolchain that compiles them (nvcc's version, the flags and
target architectures, CUTLASS's version for the Hopper kernels). A comment or a reformatting leaves a
fingerprint as it was; a changed token, flag, compiler or CUTLASS gives a new one, so a record of a
family passing its tests (vitfast.kernels.records) names the machine code it proved.

A family's sources are its .cu files and the host .cpp files that launch them and take their gradients,
with every file under csrc/ they include (transitively, by "..." includes). setup.py computes the
fingerprints at build time and compiles them into vitfast._C (torch.ops.vitfast.kernel_fingerprints),
with the toolchain it hashed (torch.ops.vitfast.kernel_toolchain).

Plain Python with no import of vitfast or torch: setup.py loads this file by its path."""
import glob
import hashlib
import json
import os
import re

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
    # the portable kernels of the fused linears: the mma.sync GEMM, and linear_gelu's backward pass
    "gemm_mma": ["gemm/mma_gemm.cu", "gemm/linear_gelu_backward_kernels.cu", *_GEMM_HOST],
    "gemm_sm90": ["gemm/sm90/linear_*_sm90_*.cu", "gemm/sm90/lp_matmul_sm90.cu", *_GEMM_HOST],
    "fp8_gemm_sm90": ["gemm/sm90/fp8_*_sm90.cu", "gemm/fp8_linear_cuda.cpp"],
}
SM90_DIR_PREFIXES = ("attention/sm90/", "gemm/sm90/")  # compiled for sm_90a alone, with CUTLASS (setup.py)

# The toolchain's parts, as setup.py describes them (kernel_toolchain()): which of them a family's
# machine code depends on is decided by what it compiles (family_toolchain).
NO_TOOLCHAIN = {"nvcc": None, "cutlass": None, "cxx_flags": [], "nvcc_flags": [], "sm90_flags": []}

# C++ tokens: literals first (a prefix letter is not an identifier), then comments, names and numbers,
# then punctuators by longest match. '>>' and '>>=' are left as single '>' tokens so that a template's
# closing '> >' and '>>' agree; no valid program differs by that alone.
_TOKEN = re.compile(r"""
    (?P<raw>(?:u8|u|U|L)?R"(?P<delim>[^()\\\s]{0,16})\(.*?\)(?P=delim)")
  | (?P<string>(?:u8|u|U|L)?"(?:\\.|[^"\\\n])*")
  | (?P<char>(?:u8|u|U|L)?'(?:\\.|[^'\\\n])*')
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<number>\.?\d(?:[eEpP][+-]|[\w.]|'(?=\w))*)
  | (?P<newline>\n)
  | (?P<space>[ \t\r\f\v]+)
  | (?P<punct>\.\.\.|<=>|<<=|->\*|::|->|\+\+|--|<<|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|\#\#|\.\*|.)
""", re.S | re.X)


def tokens(text):
    """text as the compiler's tokens, one string: comments and whitespace dropped, each token separated
    by one space, a preprocessor directive on a line of its own, and a function-like macro's name joined
    to its '(' (`#define F(x)` and `#define F (x)` mean different things)."""
    text = text.replace("\\\r\n", "").replace("\\\n", "")  # line splicing comes before everything else
    out, line_start, directive, prev_space = [], True, False, False  # out: tokens and "\n" ending directives
    for m in _TOKEN.finditer(text):
        kind, value = m.lastgroup, m.group()
        if kind == "delim":  # the raw string's inner group: lastgroup is the outer one
            kind = "raw"
        if kind in ("space", "comment"):
            prev_space = True
            continue
        if kind == "newline":
            if directive:
                out.append("\n")
            line_start, directive, prev_space = True, False, True
            continue
        if line_start and value == "#":
            if out and out[-1] != "\n":
                out.append("\n")
            directive = True
        if directive and value == "(" and not prev_space and out[-3:-1] == ["#", "define"]:
            out[-1] += "("
        else:
            out.append(value)
        line_start, prev_space = False, False
    return " ".join(out).replace(" \n ", "\n").replace(" \n", "\n").strip()


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


def family_sources(family, csrc):
    """The files (absolute paths) FAMILIES[family] names: its .cu and host .cpp files, sorted."""
    found = []
    for pattern in FAMILIES[family]:
        matches = sorted(glob.glob(os.path.join(csrc, pattern)))
        if not matches:
            raise FileNotFoundError(f"kernel family {family}: no file matches csrc/{pattern}")
        found += matches
    return sorted(set(found))


def family_files(family, csrc, sources=None):
    """Every file (absolute path) the family's sources (default: family_sources) are built from, sorted."""
    files = set()
    for source in sources or family_sources(family, csrc):
        includes(source, csrc, files)
    return sorted(files)


def family_toolchain(sources, csrc, toolchain):
    """The parts of `toolchain` the machine code of a family's sources depends on: nvcc and the host
    compiler's flags always; the portable -gencode flags for its .cu files outside the sm90 folders; the
    sm_90a flags and CUTLASS's version for those inside."""
    cu = [os.path.relpath(p, csrc).replace(os.sep, "/") for p in sources if p.endswith(".cu")]
    sm90 = any(p.startswith(SM90_DIR_PREFIXES) for p in cu)
    portable = any(not p.startswith(SM90_DIR_PREFIXES) for p in cu)
    parts = {"nvcc": toolchain.get("nvcc"), "cxx_flags": toolchain.get("cxx_flags", [])}
    if portable:
        parts["nvcc_flags"] = toolchain.get("nvcc_flags", [])
    if sm90:
        parts["sm90_flags"] = toolchain.get("sm90_flags", [])
        parts["cutlass"] = toolchain.get("cutlass")
    return parts


def fingerprint(family, csrc, toolchain=NO_TOOLCHAIN):
    """The first 16 hex digits of the SHA-256 of the family's files (each one's path under csrc and its
    tokens) and of the toolchain parts that compile them."""
    sources = family_sources(family, csrc)
    h = hashlib.sha256()
    for path in family_files(family, csrc, sources):
        h.update(os.path.relpath(path, csrc).replace(os.sep, "/").encode() + b"\0")
        with open(path, encoding="utf-8") as f:
            h.update(tokens(f.read()).encode())
        h.update(b"\0")
    h.update(json.dumps(family_toolchain(sources, csrc, toolchain), sort_keys=True).encode())
    return h.hexdigest()[:16]


def fingerprints(csrc, toolchain=NO_TOOLCHAIN):
    """{family: fingerprint} for every family, from the sources under csrc and the toolchain."""
    return {family: fingerprint(family, csrc, toolchain) for family in FAMILIES}


def header(prints, toolchain):
    """The C++ header setup.py writes (csrc/generated/kernel_fingerprints.h, git-ignored)."""
    text = ";".join(f"{family}={value}" for family, value in sorted(prints.items()))
    described = json.dumps(json.dumps(toolchain, sort_keys=True))  # a C string literal of the JSON
    return ("#pragma once\n// Written by setup.py from vitfast/kernels/fingerprints.py: each CUDA kernel family's "
            "fingerprint, and the toolchain they hash.\n"
            f'#define VITFAST_KERNEL_FINGERPRINTS "{text}"\n'
            f"#define VITFAST_KERNEL_TOOLCHAIN {described}\n")
