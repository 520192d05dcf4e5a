"""The packaged self-tests' cases, run here on the CPU (our CPU kernels against their twins): each case
of every family holds and names what it tests (test_check_gpu.py shows a wrong result failing one). On
the GPU the same cases compare our CUDA kernels with the CPU (`python -m vitfast.check --gpu`)."""
import pytest

from vitfast.kernels.selftests import all_selftests, module_of

FAMILIES = sorted(all_selftests())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_quick_cases_hold_on_the_cpu(family):
    names = []
    for name, check in module_of(family).cases(family, "cpu", quick=True):
        check()
        names.append(name)
    assert names and len(set(names)) == len(names), "each case named once"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_full_run_has_more_cases_than_the_quick_one(family):
    module = module_of(family)
    quick = sum(1 for _ in module.cases(family, "cpu", quick=True))
    full = sum(1 for _ in module.cases(family, "cpu", quick=False))
    assert full > quick
