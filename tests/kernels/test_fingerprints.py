"""A family's fingerprint is what decides its machine code: its translation units as C++ tokens (a comment
or a reformatting changes nothing; a token, a flag, nvcc or CUTLASS does) and the build's toolchain; and
the build carries the fingerprints of the sources and toolchain it was built from."""
import json
import os
import re
import shutil

import pytest
import torch

import vitfast
from vitfast.kernels import fingerprints

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")
TOOLCHAIN = {"nvcc": "Cuda compilation tools, release 13.0, V13.0.88", "cutlass": "4.2.0",
             "cxx_flags": ["-O3", "-std=c++17"], "nvcc_flags": ["-O3", "-gencode=arch=compute_80,code=sm_80"],
             "sm90_flags": ["-O3", "-gencode=arch=compute_90a,code=sm_90a"]}


@pytest.fixture
def csrc(tmp_path):
    copy = tmp_path / "csrc"
    shutil.copytree(CSRC, copy, ignore=shutil.ignore_patterns("generated"))
    return copy


def edit(path, change):
    path.write_text(change(path.read_text()))


def changed(before, after):
    return {k for k in before if before[k] != after[k]}


def test_the_build_carries_the_fingerprints_of_its_sources_and_toolchain():
    """vitfast._C's fingerprints are those of the sources under csrc/ now (this checkout built them) and
    of the toolchain it reports; nvcc's version is in it wherever CUDA kernels were built."""
    built = vitfast.kernel_fingerprints()
    toolchain = json.loads(torch.ops.vitfast.kernel_toolchain())
    assert sorted(built) == sorted(fingerprints.FAMILIES)
    assert built == fingerprints.fingerprints(CSRC, toolchain)
    assert all(len(v) == 16 and int(v, 16) >= 0 for v in built.values())
    assert (toolchain["nvcc"] is not None) == vitfast.has_cuda_kernels()
    assert not any(f.startswith("-I") for part in ("cxx_flags", "nvcc_flags", "sm90_flags") for f in toolchain[part])
    if torch.ops.vitfast.sm90_kernels_built():
        assert re.fullmatch(r"\d+\.\d+\.\d+", toolchain["cutlass"]) and "-gencode=arch=compute_90a,code=sm_90a" in \
            toolchain["sm90_flags"]


def test_a_family_is_built_from_its_kernels_headers_launchers_and_autograd_nodes():
    sm90 = fingerprints.family_files("attention_sm90", CSRC)
    assert os.path.join(CSRC, "attention", "sm90", "attention_protocol.h") in sm90
    assert os.path.join(CSRC, "attention", "attention_path.h") in sm90
    assert os.path.join(CSRC, "attention", "attention_autograd.cpp") in sm90
    assert os.path.join(CSRC, "kernel_gate.h") in sm90


def test_comments_and_layout_change_no_fingerprint(csrc):
    """Every comment reworded, every indentation doubled, blank lines added, a comment-only line and a
    block comment inserted, in every kernel, header and launcher: no fingerprint moves."""
    before = fingerprints.fingerprints(str(csrc), TOOLCHAIN)
    for path in csrc.rglob("*"):
        if path.suffix in (".cu", ".cuh", ".h", ".cpp"):
            edit(path, lambda t: "// a new first line\n/* and a block\n   comment */\n" +
                 re.sub(r"//[^\n]*", "// reworded", re.sub(r"^( +)", r"\1\1", t, flags=re.M)).replace(";\n", ";\n\n"))
    assert fingerprints.fingerprints(str(csrc), TOOLCHAIN) == before


def test_a_token_changes_the_fingerprints_of_the_families_that_compile_it(csrc):
    before = fingerprints.fingerprints(str(csrc), TOOLCHAIN)
    edit(csrc / "gemm" / "mma_gemm.cuh", lambda t: t.replace("kStages = 3", "kStages = 4", 1))
    after = fingerprints.fingerprints(str(csrc), TOOLCHAIN)
    assert changed(before, after) == {"gemm_mma"}
    edit(csrc / "attention" / "mma.cuh", lambda t: t + "\nconstexpr int kOneMore = 1;\n")  # both attention families
    again = fingerprints.fingerprints(str(csrc), TOOLCHAIN)
    assert changed(after, again) == {"attention_sm90", "attention_mma"}
    edit(csrc / "norm" / "layer_norm_autograd.cpp", lambda t: t + "\nnamespace { int unused = 0; }\n")  # host code
    last = fingerprints.fingerprints(str(csrc), TOOLCHAIN)
    assert changed(again, last) == {"layer_norm", "layer_norm_fp8"}
    # a variable renamed is a changed token: the tokens, not the machine code, are what is compared
    edit(csrc / "quant" / "scaled_cast_cuda.cu", lambda t: re.sub(r"\btensor_scale\b", "scale_of_tensor", t))
    assert changed(last, fingerprints.fingerprints(str(csrc), TOOLCHAIN)) == {"scaled_cast"}


@pytest.mark.parametrize("part,value,moved", [
    ("nvcc", "Cuda compilation tools, release 12.8, V12.8.93", "all"),
    ("cxx_flags", ["-O2", "-std=c++17"], "all"),
    ("nvcc_flags", ["-O3", "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"], "portable"),
    ("sm90_flags", ["-O3", "-gencode=arch=compute_90a,code=sm_90a", "-DVITFAST_DEBUG_SYNC"], "sm90"),
    ("cutlass", "4.3.0", "sm90"),
])
def test_the_toolchain_changes_the_fingerprints_of_what_it_compiles(part, value, moved):
    """nvcc and the host flags reach every family; the portable -gencode list the mma.sync, LayerNorm
    and quantizer kernels; the sm_90a flags and CUTLASS the Hopper families."""
    before = fingerprints.fingerprints(CSRC, TOOLCHAIN)
    after = fingerprints.fingerprints(CSRC, {**TOOLCHAIN, part: value})
    sm90 = {"attention_sm90", "gemm_sm90", "fp8_gemm_sm90"}
    want = {"all": set(before), "sm90": sm90, "portable": set(before) - sm90}[moved]
    assert changed(before, after) == want


@pytest.mark.parametrize("a,b,same", [
    ("int a = b+ +c;", "int a = b + + c ;", True),
    ("int a = b++ + c;", "int a = b + ++c;", False),  # maximal munch kept
    ("#define F(x) (x)\n", "#define F (x) (x)\n", False),  # a function-like macro is not an object-like one
    ("#define F(x) (x)\n", "#  define F(x)   (x) // why\n", True),
    ('char s[] = "a  b"; // x', 'char s[] = "a b";', False),  # a string's spaces are its contents
    ('x = 1; /* "no string */ y = 2;', "x = 1;\n\ny = 2;", True),
    ("std::vector<std::vector<int>> v;", "std::vector<std::vector<int> > v;", True),
    ("#if A\nint x;\n#endif\n", "#if A int x;\n#endif\n", False),  # a directive ends at its line's end
    ("#define LONG 1 + \\\n  2\n", "#define LONG 1 + 2\n", True),  # a spliced line is one line
])
def test_tokens(a, b, same):
    assert (fingerprints.tokens(a) == fingerprints.tokens(b)) == same
