"""Which CUDA kernel families may run on which GPU kind: those a GPU sitting recorded passing their tests
at the sources this build compiled. No kernel that no GPU has run, or whose sources changed since its
GPU kind's record, runs by default; its ops take the library path, the ATen composite or the CPU twin,
with one warning per GPU kind naming the command that verifies them.

The records live beside the dispatch data, in vitfast/layers/dispatch_data/<gpu>.json:

    "verified": {"gemm_sm90": {"fingerprint": "942e087a3fbe07dd", "commit": "50dff3b",
                               "date": "2026-11-24", "tests": "what passed"}, ...}

`bash benchmarks/gpu_checks.sh call1` (benchmarks/sitting.py) writes them for the families whose tests
passed, and benchmarks/write_records.py puts them here. At import, install() hands
the families whose recorded fingerprint equals this build's (vitfast.kernel_fingerprints()) to the
C++ gate (csrc/kernel_gate.h), which every CUDA entry point asks before it launches a kernel.
VITFAST_UNVERIFIED_KERNELS=1 lets every family run (a GPU sitting's tests set it)."""
import glob
import json
import os
import warnings

import torch

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layers", "dispatch_data")
OPT_IN = "VITFAST_UNVERIFIED_KERNELS"
VERIFY_COMMAND = "bash benchmarks/gpu_checks.sh call1"  # named by the gate's warning


def parse_fingerprints(text):
    """"family=hex;family=hex" (the build's answer, a bench table's "kernels:" line) -> {family: hex}."""
    return dict(item.split("=", 1) for item in text.split(";") if item)


def built_fingerprints():
    """{family: fingerprint} of this build's CUDA kernel families (vitfast/fingerprints.py)."""
    return parse_fingerprints(torch.ops.vitfast.kernel_fingerprints())


def records(data_dir=DATA_DIR):
    """{gpu name: {family: record}} from every data file's "verified" section."""
    out = {}
    for path in sorted(glob.glob(os.path.join(data_dir, "*.json"))):
        with open(path) as f:
            data = json.load(f)
        if data.get("verified"):
            out[data["gpu"]] = data["verified"]
    return out


def verified_families(recs, built):
    """{gpu name: [family]}: the families whose record names the fingerprint this build has."""
    return {gpu: sorted(f for f, r in fams.items() if built.get(f) == r.get("fingerprint"))
            for gpu, fams in recs.items()}


def install(data_dir=DATA_DIR):
    """Hands the verified families of every GPU kind with records to the C++ gate (and re-reads
    VITFAST_UNVERIFIED_KERNELS); returns {gpu name: [family]}. Runs at import; tests call it again."""
    verified = verified_families(records(data_dir), built_fingerprints())
    torch.ops.vitfast.set_kernel_records("".join(f"{gpu}\t{','.join(fams)}\n" for gpu, fams in verified.items()))
    from .layers import dispatch  # its answers depend on the gate's
    dispatch.forget_choices()
    return verified


def allowed(family, gpu, hopper=True, warn=True):
    """Whether `family`'s kernels may run on the GPU named `gpu` (the C++ gate's answer; where not, the
    first refusal on that GPU kind warns once, here or in the C++ ops, unless warn=False). hopper: a
    compute capability 9.0 GPU, whose warning names the sm90 families too."""
    ok, message = torch.ops.vitfast.kernel_verdict(family, gpu, hopper, warn)
    if message:
        warnings.warn(message, stacklevel=2)
    return ok
