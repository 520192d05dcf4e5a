"""Where our CUDA kernels run: the fingerprint of what each family was compiled from (fingerprints), the
records of families passing their self-tests per kind of GPU (records), the gate that hands them to the
C++ entry points (gate), the self-tests that make records on the user's own GPU (`python -m
vitfast.check --gpu`: check_gpu, selftest, selftests/), and the per-GPU choice between our kernels and
the library path (dispatch), measured by the tuner (tune, timing)."""
from . import dispatch, fingerprints, gate, records  # noqa: F401
