"""`python -m vitfast.check --gpu`: each CUDA kernel family's packaged self-test (vitfast.kernels.selftests)
on this machine's GPU, each family in a process of its own with a time limit (vitfast.kernels.selftest),
so a crash, a hang or a wrong result is named per family and poisons nothing; the families that pass are
recorded under this GPU's key and this build's fingerprints (vitfast.kernels.records), in the user's
cache by default, and run by default from then on.

A verdict per family: passed; failed (the first cases that did not hold); crashed (the exit status, the
case it was in and the last line it printed); hung (past its time limit, in which case); no kernel of
ours launched (every case held, but through another path: nothing to record); not built for this GPU;
no self-test. --quick runs a few cases of each family and records nothing."""
import concurrent.futures
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time

from . import gate, records
from .selftests import all_selftests

STARTUP_S = 45.0  # a process's import of torch and vitfast and its CUDA context, with room for a busy machine
JOBS = 3  # families at once: each its own CUDA context; one hung kernel holds one slot
TUNE_LIMIT_S = 240.0  # vitfast.kernels.tune: 23-25 s for the same cases on an H200 (2026-11-26)


@dataclasses.dataclass
class Verdict:
    family: str
    status: str  # passed | failed | crashed | hung | no kernel launched | not built for this GPU | no self-test
    detail: str = ""
    cases: int = 0
    failed: int = 0
    seconds: float = 0.0
    kernels: tuple = ()

    @property
    def passed(self):
        return self.status == "passed"


def runs_here(test, capability, sm90_built):
    """Whether the family's kernels were built for a GPU of compute capability `capability` (None: the
    CPU, where every family's CPU kernels run)."""
    if capability is None:
        return True
    if test.exact_capability:
        return tuple(capability) == tuple(test.capability) and sm90_built
    return tuple(capability) >= tuple(test.capability)


def plan(capability, sm90_built, families=None):
    """[(family, SelfTest or None, why it does not run or "")] for the families of this build (or those
    named), in the fingerprints' order."""
    tests = all_selftests()
    out = []
    for family in families or list(gate.built_fingerprints()):
        test = tests.get(family)
        if test is None:
            out.append((family, None, "no self-test"))
        elif not runs_here(test, capability, sm90_built):
            out.append((family, test, "not built for this GPU"))
        else:
            out.append((family, test, ""))
    return out


def limit_s(test, quick):
    """A family's time limit: its process's start, and three times its cases' budget."""
    return STARTUP_S + 3 * test.budget_s * (0.25 if quick else 1.0)


def verdict(family, returncode, stdout, stderr, timed_out, seconds, limit, on_gpu=False):
    """The family's Verdict from its process's exit and output (selftest.py's JSON lines). on_gpu: a
    pass counts only where one of the family's kernels launched (the done line names them)."""
    events = []
    for line in stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a library's own print
    results = [e for e in events if "case" in e]
    started = [e["start"] for e in events if "start" in e]
    done = next((e for e in events if e.get("done")), None)
    failures = [e for e in results if not e["ok"]]
    in_case = f" in case {started[-1]!r}" if started and len(started) > len(results) else ""
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    v = Verdict(family, "passed", cases=len(results), failed=len(failures), seconds=round(seconds, 1))
    if timed_out:
        v.status, v.detail = "hung", f"past its limit of {limit:.0f} s{in_case}"
    elif failures:
        v.status = "failed"
        v.detail = "; ".join(f"{e['case']}: {e['detail']}" for e in failures[:2])
    elif returncode != 0 or done is None:
        v.status, v.detail = "crashed", f"exit status {returncode}{in_case}" + (f": {last.strip()}" if last else "")
    elif not results:
        v.status, v.detail = "failed", "no case ran"
    else:
        v.kernels = tuple(done.get("kernels", ()))
        if on_gpu and not v.kernels:
            v.status, v.detail = "no kernel launched", "every case held, but none of the family's kernels ran"
    return v


def run_family(family, test, device="cuda", quick=False, limit=None, env=None):
    """The family's self-test in a process of its own, within `limit` seconds: its Verdict."""
    limit = limit if limit is not None else limit_s(test, quick)
    cmd = [sys.executable, "-m", "vitfast.kernels.selftest", family, "--device", device, *(["--quick"] * quick)]
    child_env = {**os.environ, gate.OPT_IN: "1", **test.env, **(env or {})}
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=child_env)
        out, err, code, timed_out = done.stdout, done.stderr, done.returncode, False
    except subprocess.TimeoutExpired as e:  # subprocess.run has killed it
        out, err, code, timed_out = e.stdout or "", e.stderr or "", None, True
        out, err = [s.decode(errors="replace") if isinstance(s, bytes) else s for s in (out, err)]
    return verdict(family, code, out, err, timed_out, time.perf_counter() - start, limit, on_gpu=device != "cpu")


def run(planned, device="cuda", quick=False, jobs=JOBS, on_verdict=None):
    """Every planned family that runs here, `jobs` at once: [Verdict] in the plan's order (those that do
    not run here with their reason). on_verdict(v) is called as each one ends."""
    verdicts = {family: Verdict(family, why) for family, _, why in planned if why}
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {pool.submit(run_family, family, test, device, quick): family
                   for family, test, why in planned if not why}
        for future in concurrent.futures.as_completed(futures):
            verdicts[futures[future]] = future.result()
            if on_verdict:
                on_verdict(verdicts[futures[future]])
    return [verdicts[family] for family, _, _ in planned]


def driver_version():
    """The NVIDIA driver's version ("580.159.04") as nvidia-smi says it, or "unknown" (kept as information)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.splitlines()[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def to_records(verdicts, gpu):
    """The records of the families that passed: fingerprint, and the machine as information."""
    import torch

    import vitfast
    built = gate.built_fingerprints()
    info = {"gpu": gpu, "driver": driver_version(), "torch": torch.__version__, "vitfast": vitfast.__version__,
            "date": datetime.date.today().isoformat()}
    return [{"family": v.family, "fingerprint": built[v.family], **info,
             "tests": f"vitfast.check --gpu: {v.cases} cases passed in {v.seconds:.1f} s"}
            for v in verdicts if v.passed]


def run_tune(folder, args=()):
    """vitfast.kernels.tune into folder (with its further args), in a process of its own within
    TUNE_LIMIT_S: (its summary lines, why it failed or "")."""
    cmd = [sys.executable, "-m", "vitfast.kernels.tune", "--out-dir", folder, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TUNE_LIMIT_S)
    except subprocess.TimeoutExpired:
        return [], f"stopped at its limit of {TUNE_LIMIT_S:.0f} s"
    if done.returncode != 0:
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
        return [], f"exit status {done.returncode}: {last.strip()}"
    return [line for line in done.stdout.splitlines() if not line.startswith("  ")], ""


def row(v):
    cases = f"{v.cases - v.failed}/{v.cases}" if v.cases else "-"
    seconds = f"{v.seconds:.1f}" if v.seconds else "-"
    return f"{v.family:<16}{v.status:<24}{cases:>9}{seconds:>8}  {v.detail}".rstrip()


def header():
    return f"{'family':<16}{'verdict':<24}{'cases':>9}{'s':>8}  detail"


def main(families=None, quick=False, record_into=None, dispatch_into=None, jobs=JOBS):
    """The command: checks this GPU (the current CUDA device), prints the table, records what passed and
    re-arms the gate, then times the ops and writes this GPU's dispatch rows (unless quick); 0 when every
    family that runs here passed and the timing ran, else 1."""
    import torch

    import vitfast
    from ..cli import UsageError

    if not vitfast.has_cuda_kernels():
        raise UsageError("--gpu: this build of vitfast has no CUDA kernels (no CUDA toolkit was found when it was "
                         "installed, or VITFAST_SKIP_CUDA=1); reinstall it where nvcc is found")
    if not torch.cuda.is_available():
        raise UsageError("--gpu: no CUDA GPU is visible here (torch.cuda.is_available() is False); run it on the "
                         "machine whose GPU is to run vitfast's kernels")
    built = list(gate.built_fingerprints())
    unknown = [f for f in families or () if f not in built]
    if unknown:
        raise UsageError(f"--families: no kernel family {unknown[0]!r}; this build has {', '.join(built)}")
    prop = torch.cuda.get_device_properties(torch.cuda.current_device())
    key = records.gpu_key(prop.major, prop.minor, prop.multi_processor_count)
    print(f"{prop.name} ({key}: compute capability {prop.major}.{prop.minor}, {prop.multi_processor_count} SMs), "
          f"torch {torch.__version__}, vitfast {vitfast.__version__}{', quick: nothing is recorded' if quick else ''}",
          flush=True)
    planned = plan((prop.major, prop.minor), torch.ops.vitfast.sm90_kernels_built(), families)
    runs = [f for f, _, why in planned if not why]
    print(f"testing {len(runs)} kernel families, {jobs} at once, each in a process of its own", flush=True)
    verdicts = run(planned, "cuda", quick, jobs,
                   on_verdict=lambda v: print(f"  {v.family}: {v.status} ({v.seconds:.0f} s)", flush=True))
    print("\n" + header())
    for v in verdicts:
        print(row(v))
    passed = [v for v in verdicts if v.passed]
    if passed and not quick:
        folder = record_into or records.user_dir()
        try:
            path = records.write(folder, key, to_records(passed, prop.name),
                                 keep=1 if record_into else records.USER_KEEPS)
        except OSError as e:
            raise UsageError(f"{'--record-into' if record_into else 'the cache (VITFAST_CACHE_DIR)'}: cannot write "
                             f"the records into {folder}: {e.strerror or e}") from e
        read = os.path.realpath(folder) in {os.path.realpath(d) for d in (records.SHIPPED_DIR, records.user_dir())}
        gate.install()
        print(f"\nrecorded {', '.join(v.family for v in passed)} for {key} in {path}" +
              (": they run by default on this kind of GPU from now on" if read else
               " (a folder the gate does not read: the package's records and the user's cache are)"))
    failed = [v for v in verdicts if v.family in runs and not v.passed]
    if failed:
        print(f"{', '.join(v.family for v in failed)}: not recorded; their ops run the library path "
              "(the same results, slower)")
    tuned = ""
    if passed and not quick:
        from . import dispatch
        folder = dispatch_into or dispatch.user_dir()
        print(f"\ntiming what runs now against the library path at the ViT models' shapes (limit {TUNE_LIMIT_S:.0f} s)",
              flush=True)
        lines, tuned = run_tune(folder, ["--records", record_into] if record_into else [])
        print("\n".join(lines) if lines else f"the timing failed ({tuned}): the dispatch rows are as they were")
        dispatch.forget_data()
    return 1 if failed or tuned else 0
