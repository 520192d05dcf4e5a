"""What the self-tests compare with: bit-for-bit equality (NaN matching NaN) and closeness measured as
a relative norm, each raising AssertionError with a message that says where and by how much."""
import torch

_INT = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
        torch.float8_e4m3fn: torch.uint8, torch.float8_e5m2: torch.uint8, torch.int8: torch.int8}


def bits(x):
    """x's bit patterns as integers of its width."""
    return x.contiguous().view(_INT[x.dtype])


def assert_same_bits(got, want, what=""):
    """got and want identical bit for bit (after moving both to the CPU), except that any NaN matches
    any NaN."""
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.shape != want.shape or got.dtype != want.dtype:
        raise AssertionError(f"{what}: {tuple(got.shape)} {got.dtype} against {tuple(want.shape)} {want.dtype}")
    same = bits(got) == bits(want)
    if got.is_floating_point():
        same |= torch.isnan(got.float()) & torch.isnan(want.float())
    if not bool(same.all()):
        bad = (~same).flatten().nonzero()[:4].flatten()
        raise AssertionError(f"{what}: {int((~same).sum())} of {same.numel()} differ, e.g. "
                             f"{got.flatten()[bad].tolist()} against {want.flatten()[bad].tolist()}")


def relative_error(got, want):
    """||got - want|| / ||want|| in float64 on got's device (no copy of a large GPU tensor to the host)."""
    got, want = got.detach().double(), want.detach().double().to(got.device)
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


def assert_2x_torch(ours, theirs, ref, floor, what=""):
    """ours' relative error against the float64 reference at most twice that of PyTorch's same
    computation at the same precision (theirs) plus floor: the FlashAttention rule, which holds a kernel
    to its precision rather than to a fixed tolerance; same dtype and shape as theirs, and no NaN or inf
    where the reference has none."""
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        raise AssertionError(f"{what}: {tuple(ours.shape)} {ours.dtype} against PyTorch's "
                             f"{tuple(theirs.shape)} {theirs.dtype}")
    bad = ~torch.isfinite(ours.detach()) & torch.isfinite(ref.detach().to(ours.device))
    if bool(bad.any()):
        raise AssertionError(f"{what}: {int(bad.sum())} non-finite values where the reference has none")
    err, err_torch = relative_error(ours, ref), relative_error(theirs, ref)
    if not err <= 2 * err_torch + floor:
        raise AssertionError(f"{what}: relative error {err:.3e} over twice PyTorch's {err_torch:.3e} + {floor:.1e}")


def assert_close(got, want, tol, what=""):
    """got's relative error against want (the float64 reference) at most tol, and no NaN or inf where
    want has none."""
    got_d, want_d = got.detach().double().cpu(), want.detach().double().cpu()
    if got_d.shape != want_d.shape:
        raise AssertionError(f"{what}: shape {tuple(got_d.shape)} against {tuple(want_d.shape)}")
    bad = ~torch.isfinite(got_d) & torch.isfinite(want_d)
    if bool(bad.any()):
        raise AssertionError(f"{what}: {int(bad.sum())} non-finite values where the reference has none")
    err = relative_error(got_d, want_d)
    if not err <= tol:
        raise AssertionError(f"{what}: relative error {err:.3e} over the tolerance {tol:.1e}")
