"""Adversarial inputs for the quantizer tests: never only randn. (And the tests' shared skips, and the
environment of the commands they start.)"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import torch

import vitfast

needs_cuda = __import__("pytest").mark.skipif(
    not (torch.cuda.is_available() and vitfast.has_cuda_kernels()), reason="needs a GPU and vitfast's CUDA kernels")

# Each command a test starts runs on one thread (pytest-xdist's workers already hold the cores, see
# tests/conftest.py, and a command of several ranks would oversubscribe them) and without the user's
# VITFAST_DEBUG (tracebacks in place of the one-line errors the tests read).
COMMAND_ENV = {**{k: v for k, v in os.environ.items() if k != "VITFAST_DEBUG"}, "OMP_NUM_THREADS": "1"}


def run_module(module, args, cwd=None, env=COMMAND_ENV, **kwargs):
    """`python -m module *args` as a user runs it, in COMMAND_ENV unless told: its CompletedProcess, the
    output captured as text, ten minutes at most."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


def find_cuobjdump():
    """cuobjdump from the toolkit, or the copy torch's triton ships (it reads SASS without a GPU); or None."""
    triton = importlib.util.find_spec("triton")
    shipped = (os.path.join(os.path.dirname(triton.origin), "backends", "nvidia", "bin", "cuobjdump")
               if triton and triton.origin else None)
    for candidate in (shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump", shipped):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def sm90_kernels_sass(keep):
    """{name: SASS} of the built binary's sm_90a kernels whose mangled name `keep` accepts (cuobjdump,
    no GPU needed); None without cuobjdump or the sm90 kernels in this build."""
    tool = find_cuobjdump()
    if tool is None or not torch.ops.vitfast.sm90_kernels_built():
        return None
    dump = subprocess.run([tool, "--dump-sass", "--gpu-architecture", "sm_90a", vitfast._C.__file__],
                          capture_output=True, text=True, check=True).stdout
    kernels = {}
    for block in dump.split("Function : ")[1:]:
        name, _, body = block.partition("\n")
        if keep(name.strip()):
            kernels[name.strip()] = body
    return kernels


def kernel_resources(names):
    """{name: (registers, stack bytes, local bytes)} from cuobjdump --dump-resource-usage of the binary,
    for the kernels in `names` (a collection, or a predicate on the mangled name). A kernel built for
    several architectures appears once, with the last one's numbers."""
    usage = subprocess.run([find_cuobjdump(), "--dump-resource-usage", vitfast._C.__file__], capture_output=True,
                           text=True, check=True).stdout
    resources, function = {}, None
    for line in usage.splitlines():  # "Function <name>:" then "REG:.. STACK:.. SHARED:.. LOCAL:.." on the next line
        if line.strip().startswith("Function "):
            function = line.strip()[len("Function "):].rstrip(":")
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", line)
        if m and function is not None and (names(function) if callable(names) else function in names):
            resources[function] = tuple(int(v) for v in m.groups())
    return resources


def bits(x):
    return x.contiguous().view({torch.float32: torch.int32, torch.float16: torch.int16,
                                torch.bfloat16: torch.int16}[x.dtype])


def assert_same_bits(a, b, x=None):
    """a and b identical bit for bit, except that any NaN matches any NaN."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    if torch.equal(bits(a), bits(b)):  # the common case, without the NaN pass
        return
    ok = (bits(a) == bits(b)) | (torch.isnan(a) & torch.isnan(b))
    if not bool(ok.all()):
        bad = (~ok).nonzero()[:5].flatten()
        detail = "" if x is None else f" inputs {x.flatten()[bad].tolist()}"
        raise AssertionError(f"{int((~ok).sum())} mismatches: {a.flatten()[bad].tolist()} != "
                             f"{b.flatten()[bad].tolist()}{detail}")


def adversarial_fp32(n=20000, generator=None):
    """Random normals over 2^-150..2^130, fp32 subnormals, every power of two, values one ulp around
    them, midpoints between fp32 neighbours of 1.0 scaled, +-0, +-inf, NaN, fp32 max."""
    g = generator or torch.Generator().manual_seed(0)
    scale = torch.exp2(torch.randint(-150, 130, (n,), generator=g).float())
    parts = [torch.randn(n, generator=g) * scale]
    u = torch.randint(1, 2**23, (n // 4,), generator=g, dtype=torch.int32)
    parts.append(u.view(torch.float32))  # fp32 subnormals
    p2 = torch.exp2(torch.arange(-149, 128).float())
    parts += [p2, torch.nextafter(p2, torch.zeros_like(p2)), torch.nextafter(p2, torch.full_like(p2, float("inf")))]
    # Every short mantissa pattern with its low bits set to exact ties and near-ties of shorter formats.
    m = torch.randint(0, 2**23, (n // 2,), generator=g, dtype=torch.int32)
    low = torch.randint(0, 24, (n // 2,), generator=g, dtype=torch.int32)
    tie = (m >> low << low) | torch.where(low > 0, 1 << (low - 1).clamp(min=0), 0)  # ...1000 tail: a tie
    e = torch.randint(1, 255, (n // 2,), generator=g, dtype=torch.int32)
    parts.append(((e << 23) | (tie & 0x7FFFFF)).view(torch.float32))
    parts.append(torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 3.4028234663852886e38,
                               -3.4028234663852886e38, 65504.0, 65519.99, 65520.0, 448.0, 464.0, 480.0, 57344.0,
                               61440.0, 2.0**-24, 2.0**-25, 1.5 * 2.0**-25, 2.0**-133, 2.0**-134]))
    x = torch.cat(parts)
    signs = torch.randint(0, 2, x.shape, generator=g).bool()
    return torch.where(signs, -x, x)


def said_in_a_fresh_process(script, message):
    """How many times `message` appears in what `script` prints and warns (stdout and stderr) when run
    by a new Python at the repository's root: a warning that is once per process, counted where no
    other test drew it first. A C++ warning from an op called through torch.ops went to stderr, not to
    Python's warnings, under torch 2.11: both are counted."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return (done.stdout + done.stderr).count(message)
