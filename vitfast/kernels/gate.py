"""Which CUDA kernel families may run on which kind of GPU: those a record shows passing their
self-tests on GPUs of that key (vitfast.kernels.records: compute capability and SM count) at the
fingerprint of what this build compiled (vitfast.kernels.fingerprints). No kernel that no GPU of the
kind has run, or whose build changed since, runs by default; its ops take the library path, the ATen
composite or the CPU twin, with one warning per kind of GPU naming VERIFY_COMMAND.

At import, install() hands the families verified by the package's records and the user's cache to the
C++ gate (csrc/kernel_gate.h), which every CUDA entry point asks before it launches a kernel.
VITFAST_UNVERIFIED_KERNELS=1 lets every family run (the self-tests set it for the family they test)."""
import warnings

import torch

from . import records as _records

OPT_IN = "VITFAST_UNVERIFIED_KERNELS"
VERIFY_COMMAND = "python -m vitfast.check --gpu"  # named by the gate's warning

generation = 0  # bumped by install(): what caches the gate's answers (kernels/dispatch.py) compares it


def built_fingerprints():
    """{family: fingerprint} of this build's CUDA kernel families (vitfast/kernels/fingerprints.py), from
    the extension's "family=hex;family=hex"."""
    return dict(item.split("=", 1) for item in torch.ops.vitfast.kernel_fingerprints().split(";") if item)


def install(folders=None):
    """Hands the families verified at this build, per GPU key, to the C++ gate (and re-reads
    VITFAST_UNVERIFIED_KERNELS); returns {key: [family]}. folders: where the records are (default: the
    package's and the user's cache). Runs at import; tests and `vitfast.check --gpu` call it again."""
    global generation
    if folders is None:
        folders = (_records.SHIPPED_DIR, _records.user_dir())
    verified = _records.verified_families(_records.merged(*folders), built_fingerprints())
    verified = {key: fams for key, fams in verified.items() if fams}
    torch.ops.vitfast.set_kernel_records("".join(f"{key}\t{','.join(fams)}\n" for key, fams in verified.items()))
    generation += 1
    return verified


def allowed(family, key, hopper=True, warn=True):
    """Whether `family`'s kernels may run on GPUs of key `key` (the C++ gate's answer; where not, the
    first refusal for that key warns once, here or in the C++ ops, unless warn=False). hopper: a compute
    capability 9.0 GPU, whose warning names the sm90 families too."""
    ok, message = torch.ops.vitfast.kernel_verdict(family, key, hopper, warn)
    if message:
        warnings.warn(message, stacklevel=2)
    return ok
