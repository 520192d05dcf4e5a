"""The packaged self-tests of our CUDA kernel families: the adversarial cases of the GPU test suite that
found our defects, shipped in the package so that `python -m vitfast.check --gpu` can prove each family
on the user's own GPU (vitfast.kernels.check_gpu runs each family in a process of its own).

Each module here tests one or more families and holds:
- SELFTESTS: {family: SelfTest(...)}: the environment that makes that family's kernels the ones that
  run, the compute capability they need, the kernel names that show they launched, the budget;
- cases(family, device, quick): yields (name, check) pairs; check() returns nothing when the case
  holds and raises AssertionError (common.assert_close / assert_same_bits) naming what differs.

On the GPU a case compares our kernel's result with the op's CPU twin or reference in float64; on the
CPU (device="cpu") the same cases compare the CPU kernels with their pure-PyTorch twins, which is how
the cases themselves are tested on a machine without a GPU."""
import dataclasses
import importlib

MODULES = ("quantizers", "layer_norm", "attention", "gemm")  # vitfast.kernels.selftests.<module>


@dataclasses.dataclass(frozen=True)
class SelfTest:
    env: dict = dataclasses.field(default_factory=dict)  # set in the family's process, besides the opt-in
    capability: tuple = (8, 0)  # the least compute capability its kernels run on ...
    exact_capability: bool = False  # ... or the only one (the sm_90a kernels)
    kernels: tuple = ()  # substrings of the CUDA kernel names of this family: one must launch
    budget_s: float = 20.0  # the cases' time on an H100/H200, quick=False (start-up not counted)
    replaces: str = ""  # the GPU test files (and their size and time at the last sitting) it distils


def module_of(family):
    """The self-test module that tests `family`, or None."""
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        if family in module.SELFTESTS:
            return module
    return None


def all_selftests():
    """{family: SelfTest} of every module."""
    out = {}
    for name in MODULES:
        out.update(importlib.import_module(f"{__name__}.{name}").SELFTESTS)
    return out
