"""One kernel family's self-test in a process of its own (vitfast.kernels.check_gpu starts it):

    python -m vitfast.kernels.selftest FAMILY [--device cuda] [--quick]

with VITFAST_UNVERIFIED_KERNELS=1 and the family's environment (SelfTest.env) set by the caller, so the
kernels under test run whether or not a record trusts them yet. Prints one JSON object per line on
stdout: {"start": case} before each case (a hang or a crash is named by the last one), {"case": name,
"ok": bool, "detail": why not, "s": seconds} after it, and {"done": true, "cases": n, "failed": k,
"kernels": [names of ours that launched]} at the end. Exit status 0 when every case held."""
import argparse
import json
import sys
import time
import traceback

MAX_FAILURES = 5  # a wrong kernel fails many cases alike: the first few name it


def run_cases(family, device, quick, emit):
    """Runs the family's cases on device, emitting each event; returns the number that failed. On CUDA
    the run is profiled, and the done event names the kernels of ours (the family's) that launched."""
    import torch

    from .selftests import module_of

    module = module_of(family)
    if module is None:
        raise SystemExit(f"vitfast.kernels.selftest: no self-test tests the family {family!r}")
    profile = None
    if device != "cpu":
        profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
        profile.__enter__()
    count = failed = 0
    for name, check in module.cases(family, device, quick):
        emit({"start": name})
        start = time.perf_counter()
        try:
            check()
            detail = ""
        except AssertionError as e:
            detail = str(e).removeprefix(f"{name}: ") or "a comparison failed"  # the verdict names the case
        except Exception as e:  # an error inside our op is a failed case, named like one
            detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if device != "cpu":
            torch.cuda.synchronize()  # a sticky CUDA error (a kernel's fault) ends the process here
        count += 1
        failed += bool(detail)
        emit({"case": name, "ok": not detail, "detail": detail[:500], "s": round(time.perf_counter() - start, 4)})
        if failed >= MAX_FAILURES:
            break
    kernels = []
    if profile is not None:
        profile.__exit__(None, None, None)
        wanted = module.SELFTESTS[family].kernels
        kernels = sorted({e.name[:160] for e in profile.events() if any(k in e.name for k in wanted)})
    emit({"done": True, "cases": count, "failed": failed, "kernels": kernels})
    return failed


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vitfast.kernels.selftest", description=__doc__.splitlines()[0])
    p.add_argument("family")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)

    def emit(event):
        print(json.dumps(event), flush=True)

    try:
        failed = run_cases(args.family, args.device, args.quick, emit)
    except SystemExit:
        raise
    except BaseException:  # outside any case: the import, the profiler, a CUDA error that stuck
        traceback.print_exc()
        return 3
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
