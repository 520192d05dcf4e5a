"""Where our CUDA kernels may run: the fingerprint of what each family was compiled from
(fingerprints), the records of families passing their self-tests per kind of GPU (records), the gate
that hands them to the C++ entry points (gate), and the self-tests that make records on the user's own
GPU (`python -m vitfast.check --gpu`: selftest, selftests/)."""
from . import fingerprints, gate, records  # noqa: F401
