"""The 2x-PyTorch-error rule: our result's error against a float64 reference is at most twice that of
the same computation done by plain PyTorch at the same precision (plus a floor at float32 rounding)."""
import torch


def rel_err(out, ref):
    ref = ref.double().to(out.device)
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_2x_torch(ours, theirs, ref, floor=2e-6, what=""):
    e_ours, e_torch = rel_err(ours, ref), rel_err(theirs, ref)
    assert e_ours == e_ours and e_ours <= 2 * e_torch + floor, (what, e_ours, e_torch)
    return e_ours, e_torch
