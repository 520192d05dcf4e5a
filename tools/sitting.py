"""A GPU sitting: one device call of at most 9 minutes (tools/gpu_checks.sh PLAN).

    python tools/sitting.py check --out $OUT     # vitfast.check --gpu as a user runs it, the families'
                                                      # test files beside it, ViT-B on the backend
    python tools/sitting.py bench --out $OUT     # the kernel and attention tables, the models
    python tools/sitting.py ssl --out $OUT       # the self-supervised step and recipe
    python tools/sitting.py debug --out $OUT     # a failing kernel: the many-tile shapes, sanitizers
    python tools/sitting.py epilogue --out $OUT  # fc1's epilogue, FP8's mainloop, their stalls, the step
    python tools/sitting.py check --dry-run      # the plan and the plumbing, CUDA parts skipped

check: (a) `pip install` of the checkout with the carried build, then `python -m vitfast.check --gpu`
from that installed package, as a user runs it; its records and this GPU's dispatch rows then go into
the checkout's package folders (vitfast/kernels/records, dispatch_data): committed after the call, they
make our kernels run by default on every GPU of this key. (b) every
kernel family's test files (FAMILY_TESTS) and the tests that cross families, each file in a process of
its own with a time limit, VITFAST_UNVERIFIED_KERNELS=1: the suite's verdict per family beside the
self-test's (a disagreement means a self-test misses what the suite finds, or the other way round).
(c) bench_models.py at ViT-B/16 with no opt-in: the backend runs what the records allow.
bench: bench_kernels.py and bench_attention.py (every configuration and SDPA backend timed, opted in),
then bench_models.py as a user meets it (no opt-in: the package's records decide): ViT-Ti/S/B/L against
timm eager in 3 processes, ViT-B against torch.compile and the FP8 chain, and ViT-Ti's host profile.
ssl: self-supervised pretraining's GPU rows: the SSL step's images/s against the supervised one
(bench_ssl_step.py), and the mocov3_cifar10 and swav_cifar10 recipes as long as one call holds, scored by
k-NN and a linear probe against a random model, raw pixels and the model trained with labels as long
(ssl_knn.py; carry the CIFAR-10 archive, CIFAR_ARCHIVE).
epilogue: what the GEMM epilogues cost (issue 96): tools/epilogue_probe.py at ViT-B's fc1 (each epilogue
our kernels build beside cuBLAS's bare product, opted in), ncu's warp-state and scheduler sections with
their details on our GELU kernels (why ping-pong does or does not hide the epilogue) and, with the
memory workload, on the FP8 kernels (promotions or operand traffic: what bounds FP8's mainloop), and
benchmarks/profile_step.py at ViT-B/16 (the step's GPU time by op kind, no opt-in).
debug: for a family that failed: the Hopper attention's many-tile shapes, each test case in a process of
its own with a time limit (ok, wrong, hang, cut or crash; a hang or crash is run again under the
debug-sync build where one is carried, VITFAST_DEBUG_SYNC_SO: its trap names block, role, barrier,
stage, phase and work item), then compute-sanitizer memcheck, racecheck and synccheck.

Each call writes at most 8 files into --out (what the device tool brings back): summary.md and the
plan's logs and tables (FILES). Here, after the call: the records and dispatch rows of a check call
into the package's folders, the tables into benchmarks/results/."""
import argparse
import concurrent.futures
import datetime
import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALL_LIMIT_S = 540  # a device call's 10 minutes less the start and the transfers
TEST_LIMIT_S = 150  # one test (pytest-timeout, where installed: the GPU machine's image has it)

# family -> (its test files, the environment that makes them run that family's kernels)
FAMILY_TESTS = {
    "quantizers": (["tests/ops/test_float_quantize.py", "tests/ops/test_fixed_point_quantize.py",
                    "tests/ops/test_block_quantize.py"], {}),
    "scaled_cast": (["tests/ops/test_scaled_cast.py"], {}),
    "attention_mma": (["tests/ops/test_attention.py"], {"VITFAST_ATTENTION_SM90": "0"}),
    "attention_sm90": (["tests/ops/test_attention_sm90.py", "tests/ops/test_attention_bwd_sm90.py"], {}),
    "layer_norm": (["tests/ops/test_layer_norm.py"], {}),
    "layer_norm_fp8": (["tests/ops/test_layer_norm_fp8.py"], {}),
    "gemm_mma": (["tests/ops/test_linear_fused.py", "tests/ops/test_lp_matmul.py", "tests/ops/test_gelu_grad.py"],
                 {"VITFAST_GEMM_SM90": "0"}),
    "gemm_sm90": (["tests/ops/test_gemm_sm90.py", "tests/ops/test_linear_fused.py", "tests/ops/test_lp_matmul.py"],
                  {}),
    "fp8_gemm_sm90": (["tests/ops/test_fp8_linear.py"], {}),
}
# Tests across families (models on the vitfast backend, the quantized paths, the build): reported, and
# any failure among them named in the summary, but they make no record.
CROSS_TESTS = ["tests/models/test_vitfast_backend.py", "tests/models/test_dispatch.py", "tests/quant/test_fp8_chain.py",
               "tests/quant/test_linear8.py", "tests/quant/test_lowp.py", "tests/quant/test_qat.py",
               "tests/test_build.py", "tests/kernels/test_gate.py"]
DRY_RUN_PROBE = "tests/kernels/test_gate.py"  # CPU tests, seconds: the dry run's one real run of stage (b)
SHAPE_FILES = ["tests/ops/test_attention_sm90.py", "tests/ops/test_attention_bwd_sm90.py"]
SHAPE_FILTER = "many_tiles or many_heads"

# The self-supervised call (issue 98): the mocov3_cifar10 recipe and its SwAV twin, swav_cifar10, shortened to
# what one call holds, in one table beside the same model trained with labels as long. On the H200,
# 2026-11-28, mocov3_cifar10 ran 24 epochs in 89 s of training (155 s with the k-NN every 4; the whole
# benchmark, the supervised run included, about 400 s): 16 epochs of each (56.56% at 16 in that run's
# curve), each run's training cut at SSL_MAX_S should a GPU be slower.
SSL_RECIPE, SSL_EPOCHS, SSL_MAX_S = "mocov3_cifar10,swav_cifar10", 16, 90
SSL_SET = ["eval_every=4", "warmup_epochs=3"]  # a k-NN curve; the recipe's warmup scaled to the shorter run
CIFAR_ARCHIVE = os.path.join(".gpu", "cifar10-jpeg-train.tar.gz")  # ../shared/data's, carried
# a shape case's time limit, and the least budget left to start one: a case takes 8-13 s on the H200 (a process,
# its CUDA context, one test), 16 cases 4 at once about 60 s
SHAPE_LIMIT_S, SHAPE_MIN_S = 45, 15

# (stage, budget in seconds, what it runs): each call's budgets sum to at most CALL_LIMIT_S
PLAN = {
    "check": [("install", 30, "pip install of the checkout with the carried build (VITFAST_PREBUILT), into a "
                               "folder of its own"),
              ("check", 240, "python -m vitfast.check --gpu as a user runs it, on the installed package: every "
                             "family's packaged self-test, the records and this GPU's dispatch rows into the "
                             "checkout's package folders"),
              ("tests", 180, "every family's test files and the cross-family ones, a process each: the suite's "
                             "verdict per family beside the self-test's"),
              ("proof", 90, "bench_models.py, ViT-B/16 batch 256 bf16 inference, no opt-in: the backend on what "
                            "the records allow, against timm eager")],
    "bench": [("kernels", 90, "bench_kernels.py: fc1/fc2/proj in every configuration, layer_norm, lp_matmul, the FP8 "
                              "chain's products, ViT-Ti/S/B/L, against cuBLAS and the bare GEMM"),
              ("attention", 70, "bench_attention.py: the ViT shapes against each SDPA backend"),
              ("backend", 170, "bench_models.py, ViT-Ti/S/B/L batch 256 bf16, inference and training, in 3 "
                               "processes, no opt-in: the backend against timm eager (42 s a process on the H200)"),
              ("models", 170, "bench_models.py at ViT-B/16 batch 256, no opt-in: bf16, torch.compile, the FP8 chain"),
              ("profile", 40, "profile_backend.py, ViT-Ti batch 256 bf16 inference: host and device time per step "
                              "and the ops that cost the host most, timm eager and the backend (into scripts.log)")],
    "ssl": [("ssl_step", 100, "bench_ssl_step.py: images/s of the supervised, DINO and SwAV steps, sdpa and vitfast"),
            ("ssl_knn", 440, f"ssl_knn.py --recipe {SSL_RECIPE}, {SSL_EPOCHS} epochs each (training stopped "
                             f"at {SSL_MAX_S} s), and the model trained with labels as long: k-NN and probe against "
                             "random init and raw pixels")],
    "epilogue": [("probe", 60, "tools/epilogue_probe.py: ViT-B fc1 with each epilogue our GEMMs build, cuBLAS's "
                               "bare product beside them, and linear_gelu's training pass by piece"),
                 ("stalls", 120, "ncu --print-details all (SpeedOfLight, WarpStateStats, SchedulerStats) on the "
                                 "probe's first 9 CUTLASS kernels (its GELU ones first), run once"),
                 ("fp8_stalls", 160, "the same sections and the memory workload (L2 and DRAM throughput) on the "
                                     "probe's first 12 FP8 kernels (fc1's shape: each configuration into bf16, "
                                     "then GELU into e4m3 without and with the amax): promotions, stores or "
                                     "operand traffic"),
                 ("step", 150, "profile_step.py, ViT-B/16 batch 256, no opt-in: inference (timm, compile, the "
                               "backend, compile of it, the FP8 chain) and eager training, by op kind")],
    "debug": [("shapes", 150, "the Hopper attention's many-tile shapes, a process each (limit 45 s), 4 at once"),
              ("sanitize", 300, "compute-sanitizer memcheck, racecheck, synccheck over sanitize_ops.py")],
}
FILES = {"check": ["summary.md", "results.json", "tests.log", "check.log", "<key>.json", "<gpu>.json",
                   "scripts.log", "models_<gpu>.md"],
         "bench": ["summary.md", "scripts.log", "kernels_<gpu>.md", "attention_<gpu>.md", "models_<gpu>.md",
                   "models.md"],
         "ssl": ["summary.md", "scripts.log", "ssl_step_<gpu>.md", "ssl_knn_<gpu>.md", "ssl_knn_<gpu>.svg"],
         "epilogue": ["summary.md", "scripts.log", "epilogue_probe_<gpu>.md", "ncu.log", "ncu_fp8.log",
                      "profile_step_<gpu>.md"],
         "debug": ["summary.md", "shapes.log", "scripts.log"]}
BACKEND_MODELS = ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224"]


# Builds carried compressed (xz: the 59-MiB release build is 6.5 MiB), so one device call's 64 MiB hold
# the release build, the debug-sync build and the CIFAR-10 archive: <carried>/<name>.xz -> where it runs.
CARRIED = {"_C.abi3.so.xz": os.path.join("vitfast", "_C.abi3.so"),
           "debug_sync.so.xz": os.path.join(".gpu", "debug_sync.so")}


def unpack_carried(root=ROOT, carried=".gpu"):
    """Decompresses the carried builds into place (before anything imports vitfast); returns the paths
    written. The debug-sync build becomes VITFAST_DEBUG_SYNC_SO unless that is set."""
    import lzma
    import shutil

    written = []
    for name, target in CARRIED.items():
        src, dst = os.path.join(root, carried, name), os.path.join(root, target)
        if not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with lzma.open(src) as fin, open(dst + ".part", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.chmod(dst + ".part", 0o755)
        os.replace(dst + ".part", dst)
        written.append(dst)
        if name.startswith("debug_sync"):
            os.environ.setdefault("VITFAST_DEBUG_SYNC_SO", dst)
    return written


def python():
    return os.environ.get("PYTHON", sys.executable)


def built_targets():
    """The portable kernels' targets of this build ("compute_90, sm_80, sm_90"): the records name its flags,
    so only a build for the default VITFAST_CUDA_ARCHS proves what a user's default install runs."""
    import torch
    flags = " ".join(json.loads(torch.ops.vitfast.kernel_toolchain()).get("nvcc_flags", []))
    return ", ".join(sorted(set(re.findall(r"code=((?:sm|compute)_\d+a?)", flags)))) or "none"


def environment(dry_run):
    """{gpu, key, driver, torch, cuda, date, commit, flavor, targets, fingerprints} of this machine and build."""
    import torch
    import vitfast
    env = {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
           "commit": os.environ.get("VITFAST_COMMIT") or subprocess.run(
               ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
           "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
           "key": vitfast.kernels.records.device_key() if torch.cuda.is_available() else "none",
           "flavor": torch.ops.vitfast.build_flavor(), "targets": built_targets(),
           "fingerprints": vitfast.kernel_fingerprints(),
           "dry_run": dry_run}
    if torch.cuda.is_available():
        from vitfast.kernels.check_gpu import driver_version
        env["driver"] = driver_version()
    return env


def child_env(opt_in=True, site=None, **extra):
    """A stage's process environment: this checkout first on the path (site: the folder the install stage
    put the package into, instead) and every kernel allowed to run, verified or not (the sitting is what
    verifies them); opt_in=False: only what the records allow, as a user runs."""
    path = os.environ.get("PYTHONPATH")
    path = os.pathsep.join(p for p in (path or "").split(os.pathsep) if p and os.path.abspath(p) != ROOT)
    env = dict(os.environ, VITFAST_UNVERIFIED_KERNELS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=(site or ROOT) + (os.pathsep + path if path else ""), **extra)
    if not opt_in:
        del env["VITFAST_UNVERIFIED_KERNELS"]
    return env


def share_the_machine(workers):
    """The defaults of every process the sitting starts. The extension is prebuilt for sm_90 alone
    (prebuild.sh; tests/test_build.py reads the archs asked for from VITFAST_CUDA_ARCHS). Each of the
    `workers` processes at once gets its share of the cores for its CPU threads: in the first H200
    sitting (2026-11-26) 8 processes of 16 threads each on 16 cores left test_float_quantize.py
    unfinished after 420 s (60 s alone) -- oversubscription suspected, not shown."""
    os.environ.setdefault("VITFAST_CUDA_ARCHS", "90")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


def run_group(cmd, cwd, env, limit_s):
    """cmd in a process group of its own, within limit_s: (exit status, or None at the limit, its output).
    At the limit the whole group is killed: vitfast.check --gpu's self-test and timing processes too,
    which would otherwise go on using the GPU under the next stage."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", start_new_session=True) as proc:
        try:
            out = proc.communicate(timeout=limit_s)[0]
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return None, proc.communicate()[0]


def run_pytest(target, env_extra, limit_s, log, junit=None, cut=False):
    """One pytest process on `target` with a time limit: (verdict, counts, seconds). verdict: ok, failed,
    hang (the limit), crash (any other exit), empty (nothing ran). cut: the limit is what the stage's budget
    had left, shorter than a case's own, so reaching it is a cut, not a hang (the fifth H200 sitting called
    a case that passes alone in 8 s a hang when the budget stopped it at 12 s)."""
    env = child_env(**env_extra)
    cmd = [python(), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", target]
    if junit:
        cmd += ["--junitxml", junit]
    if importlib.util.find_spec("pytest_timeout") and limit_s > 30:
        # a test that hangs prints its stack and the file goes on, a little before the process limit
        cmd += ["--timeout", str(int(min(TEST_LIMIT_S, limit_s - 15)))]
    start = time.time()
    rc, text = run_group(cmd, ROOT, env, limit_s)
    seconds = time.time() - start
    counts = junit_counts(junit) if junit and rc is not None else {}
    verdict = ("cut (the stage's budget ran out)" if rc is None and cut else "hang" if rc is None
               else "ok" if rc == 0 else "failed" if rc == 1 else "empty" if rc == 5 else f"crash (exit {rc})")
    if verdict == "ok" and counts and counts["passed"] == 0:
        verdict = "empty"  # every test skipped: nothing was verified
    lines = text.splitlines()
    asserted = [line for line in lines[:-40] if line.startswith("E  ")][:60]  # each failure's message
    log.append(f"==== {target} {' '.join(f'{k}={v}' for k, v in env_extra.items())}: {verdict} in {seconds:.0f} s "
               f"{counts}\n" + "\n".join(asserted + lines[-40:]))
    return verdict, counts, seconds


def junit_counts(path):
    if not os.path.isfile(path):
        return {}
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    n["passed"] = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return n


def shape_nodes():
    out = subprocess.run([python(), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-k",
                          SHAPE_FILTER, *SHAPE_FILES], cwd=ROOT, capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if "::" in line]


def stage_shapes(args, budget, results, log):
    nodes = shape_nodes()
    results["shapes"] = {}
    if args.dry_run:
        results["shapes"] = {node: "skipped (dry run)" for node in nodes}
        return
    deadline = time.time() + budget
    debug_so = os.environ.get("VITFAST_DEBUG_SYNC_SO")

    def one(node):  # a process per case (4 at once: each has its own CUDA context, a crash stays its own)
        left = deadline - time.time()
        if left < SHAPE_MIN_S:
            return "not run (budget)"
        entries = []
        verdict, _, _ = run_pytest(node, {}, min(SHAPE_LIMIT_S, left), entries, cut=left < SHAPE_LIMIT_S)
        verdict = "wrong" if verdict == "failed" else verdict  # a comparison failed
        if verdict.startswith(("hang", "crash")) and debug_so and os.path.isfile(debug_so):
            again, _, _ = run_pytest(node, {"VITFAST_EXTENSION": os.path.abspath(debug_so)}, SHAPE_LIMIT_S, entries)
            verdict += f"; debug-sync build: {again} (its trap line is in shapes.log)"
        log.extend(entries)
        return verdict

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results["shapes"] = dict(zip(nodes, pool.map(one, nodes)))


def test_jobs():
    """(family or None, file, env) for every run of stage (b), the family files first."""
    jobs = [(family, f, env) for family, (files, env) in FAMILY_TESTS.items() for f in files]
    return jobs + [(None, f, {}) for f in CROSS_TESTS]


def stage_tests(args, budget, results, log):
    jobs = test_jobs()
    results["files"] = []
    deadline = time.time() + budget
    junit_dir = tempfile.mkdtemp(prefix="vitfast_junit_")  # not under --out: only the results come back
    if args.dry_run:  # every file named and present; one CPU file through the whole path (process, junit)
        for family, f, env in jobs:
            assert os.path.isfile(os.path.join(ROOT, f)), f
            results["files"].append(dict(family=family, file=f, env=env, verdict="skipped (dry run)", counts={}))
        verdict, counts, seconds = run_pytest(DRY_RUN_PROBE, {}, 120, log, os.path.join(junit_dir, "probe.xml"))
        results["files"].append(dict(family=None, file=DRY_RUN_PROBE, env={}, verdict=verdict, counts=counts,
                                     seconds=round(seconds)))
        return

    def one(i, job):
        family, f, env = job
        left = deadline - time.time()
        if left < 15:
            return dict(family=family, file=f, env=env, verdict="not run (budget)", counts={})
        entries = []
        verdict, counts, seconds = run_pytest(f, env, left, entries, os.path.join(junit_dir, f"{i}.xml"))
        log.extend(entries)
        return dict(family=family, file=f, env=env, verdict=verdict, counts=counts, seconds=round(seconds))

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        results["files"] = list(pool.map(lambda ij: one(*ij), enumerate(jobs)))


def family_verdicts(files):
    """{family: (passed?, why)} from the per-file results: a family passes where every file of it ran
    tests and none failed."""
    out = {}
    for family in FAMILY_TESTS:
        mine = [r for r in files if r["family"] == family]
        bad = [f"{r['file']}: {r['verdict']}" for r in mine if r["verdict"] != "ok"]
        out[family] = (not bad and bool(mine), "; ".join(bad) or
                       f"{sum(r['counts'].get('passed', 0) for r in mine)} passed in {len(mine)} file(s)")
    return out


def recorded_now(env, records_dir):
    """The families vitfast.check --gpu recorded (or found recorded) for this GPU's key at this build."""
    from vitfast.kernels import records
    return set(records.verified_families(records.read(records_dir), env["fingerprints"]).get(env["key"], []))


def agreement(results, records_dir):
    """{family: {self_test, test_files, detail}}: the self-test's verdict (recorded by the check stage or
    not) beside the test files' (stage tests)."""
    recorded = recorded_now(results["environment"], records_dir) if "check" in results else set()
    return {f: {"self_test": "recorded" if f in recorded else "not recorded",
                "test_files": "passed" if ok else "failed", "detail": why}
            for f, (ok, why) in family_verdicts(results.get("files", [])).items()}


# compute-sanitizer's tools: (share of the stage's budget, extra flags). On the H200 (2026-11-26) racecheck
# needed ~150 s for sanitize_ops.py, memcheck and synccheck ~15 s; synccheck's default table of tracked
# cuda::barrier objects overflowed ("Results might be incorrect", then a failed launch), 1024 held.
SANITIZERS = {"memcheck": (0.2, []), "racecheck": (0.6, []), "synccheck": (0.2, ["--num-cuda-barriers", "1024"])}


def sanitizer_verdict(returncode, text):
    """clean / exit N; racecheck's warnings (hazards that are safe under warp-synchronous execution,
    which its exit code counts too) are named but are not errors."""
    m = re.search(r"RACECHECK SUMMARY: \d+ hazards displayed \((\d+) errors?, (\d+) warnings?\)", text)
    if m and int(m.group(1)) == 0:
        return f"clean ({m.group(2)} warnings)" if int(m.group(2)) else "clean"
    return "clean" if returncode == 0 else f"exit {returncode}"


def stage_sanitize(args, budget, results, log):
    results["sanitize"] = {}
    for tool, (share, flags) in SANITIZERS.items():
        if args.dry_run:
            results["sanitize"][tool] = "skipped (dry run)"
            continue
        cmd = ["compute-sanitizer", "--tool", tool, *flags, "--error-exitcode", "9", python(),
               "tools/sanitize_ops.py"]
        rc, text = run_group(cmd, ROOT, child_env(), budget * share)
        verdict = "cut by its time limit" if rc is None else sanitizer_verdict(rc, text)
        summary = [line for line in text.splitlines() if "SUMMARY" in line or "Error" in line][:20]
        log.append(f"==== {tool}: {verdict}\n" + "\n".join(summary + text.splitlines()[-20:]))
        results["sanitize"][tool] = verdict


def run_script(args, budget, cmd, key, results, log, opt_in=True, cwd=ROOT, site=None, **extra):
    if args.dry_run:
        results[key] = f"skipped (dry run): python {' '.join(cmd)}"
        return
    rc, text = run_group([python(), *cmd], cwd, child_env(opt_in, site, **extra), budget)
    results[key] = "cut by its time limit" if rc is None else "ok" if rc == 0 else f"exit {rc}"
    log.append(f"==== {' '.join(cmd)}: {results[key]}\n" + "\n".join(text.splitlines()[-60:]))


def stage_kernels(args, budget, results, log):  # every kernel timed, recorded here or not (opted in)
    out = os.path.join(args.out, f"kernels_{gpu_suffix(results)}.md")
    run_script(args, budget, ["benchmarks/bench_kernels.py", "--out", out], "kernels", results, log)


def stage_attention(args, budget, results, log):
    out = os.path.join(args.out, f"attention_{gpu_suffix(results)}.md")
    run_script(args, budget, ["benchmarks/bench_attention.py", "--out", out], "attention", results, log)


# The models as a user runs them: no opt-in, the package's records decide which of our kernels run.
def stage_models(args, budget, results, log):
    run_script(args, budget, ["benchmarks/bench_models.py", "--models", "vit_base_patch16_224", "--batch-sizes", "256",
                              "--repeats", "10", "--no-train", "--out", os.path.join(args.out, "models.md")],
               "models", results, log, opt_in=False)


def stage_backend(args, budget, results, log):
    out = os.path.join(args.out, f"models_{gpu_suffix(results)}.md")
    run_script(args, budget, ["benchmarks/bench_models.py", "--models", *BACKEND_MODELS, "--batch-sizes", "256",
                              "--repeats", "10", "--no-compile", "--no-lowp", "--no-8bit", "--processes", "3",
                              "--out", out], "backend", results, log, opt_in=False)  # processes: host-bound rates vary


def stage_profile(args, budget, results, log):  # ViT-Ti is host-bound: where a step's host time goes
    run_script(args, budget, ["benchmarks/profile_backend.py", "--model", "vit_tiny_patch16_224", "--batch", "256",
                              "--backends", "timm,vitfast", "--top", "12"], "profile", results, log)


def stage_probe(args, budget, results, log):  # every epilogue opted in: it times, the check proves
    out = os.path.join(args.out, f"epilogue_probe_{gpu_suffix(results)}.md")
    run_script(args, budget, ["tools/epilogue_probe.py", "--out", out], "probe", results, log)


def ncu_binary():
    found = shutil.which("ncu") or sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def stage_stalls(args, budget, results, log):
    """ncu's warp states and scheduler statistics, details included, on the probe's first nine CUTLASS
    kernels (linear_gelu erf in each of its seven configurations, then tanh, then the first of the residual
    epilogue's: the base cost; where fewer are built, more of the residual's), each run once."""
    run_ncu(args, budget, results, "stalls", "ncu.log", 9, [])


def stage_fp8_stalls(args, budget, results, log):
    """The same on the probe's FP8 kernels at fc1's shape (every configuration of the bf16 and the e4m3
    kinds, fast accumulation's included), with the memory workload: whether the FP8 mainloop waits on its
    promotions, the epilogue on its stores, or both on the operands' L2 traffic."""
    run_ncu(args, budget, results, "fp8_stalls", "ncu_fp8.log", 12, ["--section", "MemoryWorkloadAnalysis"],
            ["--fp8-only"])


def run_ncu(args, budget, results, key, log_name, kernels, sections, probe_args=()):
    ncu = ncu_binary()
    cmd = [ncu or "ncu", "--clock-control", "none", "-k", "regex:device_kernel", "--launch-count", str(kernels),
           "--section", "SpeedOfLight", "--section", "WarpStateStats", "--section", "SchedulerStats", *sections,
           "--print-details", "all", python(), "tools/epilogue_probe.py", "--once", *probe_args]
    if args.dry_run or ncu is None:
        results[key] = f"skipped ({'dry run' if args.dry_run else 'no ncu on this machine'}): {' '.join(cmd)}"
        return
    rc, text = run_group(cmd, ROOT, child_env(), budget)
    results[key] = "cut by its time limit" if rc is None else "ok" if rc == 0 else f"exit {rc}"
    with open(os.path.join(args.out, log_name), "w") as f:
        f.write(text)


def stage_step(args, budget, results, log):  # as a user runs: the package's records decide
    out = os.path.join(args.out, f"profile_step_{gpu_suffix(results)}.md")
    run_script(args, budget, ["benchmarks/profile_step.py", "--model", "vit_base_patch16_224", "--batch", "256",
                              "--train-variants", "timm,vitfast", "--out", out], "step", results, log, opt_in=False)


def gpu_kind(name):
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200': the result tables' suffix."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def gpu_suffix(results):
    return gpu_kind(results["environment"]["gpu"])


def stage_install(args, budget, results, log):
    """`pip install` of the checkout with the carried build (VITFAST_PREBUILT: nothing is compiled) into a
    folder of its own, which the check stage runs instead of the checkout, as a user's machine would."""
    site = os.path.join(tempfile.gettempdir(), "vitfast_installed")
    run_script(args, budget, ["-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--upgrade",
                              "--target", site, ROOT], "install", results, log,
               VITFAST_PREBUILT=os.path.join(ROOT, "vitfast", "_C.abi3.so"))
    if results["install"] == "ok":
        results["site"] = site


def stage_check(args, budget, results, log):
    """`python -m vitfast.check --gpu` exactly as a user runs it: the package the install stage installed
    (the checkout where that failed), from an empty folder, its records and dispatch rows going into its
    user cache (VITFAST_CACHE_DIR). Then ship_check puts them into the checkout's package folders, so the
    call's later stages (and the package, once they are committed) run what it proved; the files are
    copied into --out too."""
    site = results.get("site")
    with tempfile.TemporaryDirectory(prefix="vitfast_check_") as cwd:
        cache = os.path.join(cwd, "cache")
        run_script(args, budget, ["-m", "vitfast.check", "--gpu"], "check", results, log, opt_in=False, cwd=cwd,
                   site=site, VITFAST_CACHE_DIR=cache)
        results["check"] += f" (the package {'pip installed into ' + site if site else 'in the checkout'})"
        if not args.dry_run:
            for path in ship_check(cache, results["environment"], args.records_dir, args.data_dir):
                shutil.copy(path, args.out)


def ship_check(cache, env, records_dir, data_dir):
    """The records in the user cache `cache` of this GPU's key at this build, into records_dir (one per
    family, as the package ships them), and this GPU's dispatch rows into data_dir: the paths written."""
    from vitfast.kernels import records
    from vitfast.kernels.dispatch import gpu_slug

    written = []
    mine = [r for r in records.read(os.path.join(cache, "records")).get(env["key"], [])
            if r["fingerprint"] == env["fingerprints"].get(r["family"])]
    if mine:
        written.append(records.write(records_dir, env["key"], mine, keep=1))
    rows = os.path.join(cache, "dispatch", gpu_slug(env["gpu"]) + ".json")
    if os.path.isfile(rows):
        os.makedirs(data_dir, exist_ok=True)
        written.append(shutil.copy(rows, data_dir))
    return written


def stage_proof(args, budget, results, log):  # the backend by default: no VITFAST_UNVERIFIED_KERNELS
    out = os.path.join(args.out, f"models_{gpu_suffix(results)}.md")
    run_script(args, budget, ["benchmarks/bench_models.py", "--models", "vit_base_patch16_224", "--batch-sizes", "256",
                              "--repeats", "10", "--no-train", "--no-compile", "--no-lowp", "--no-8bit", "--out", out],
               "proof", results, log, opt_in=False)


def stage_ssl_step(args, budget, results, log):
    out = os.path.join(args.out, f"ssl_step_{gpu_suffix(results)}.md")
    run_script(args, budget, ["benchmarks/bench_ssl_step.py", "--device", "cuda", "--steps", "40", "--log-every", "8",
                              "--out", out], "ssl_step", results, log)


def cifar_folder(root=ROOT):
    """data/cifar10 with its train/<class>/ JPEGs, unpacked from the carried archive where not there yet;
    None when neither is."""
    import tarfile

    folder = os.path.join(root, "data", "cifar10")
    if not os.path.isdir(os.path.join(folder, "train")) and os.path.isfile(os.path.join(root, CIFAR_ARCHIVE)):
        os.makedirs(folder, exist_ok=True)
        with tarfile.open(os.path.join(root, CIFAR_ARCHIVE)) as tar:
            tar.extractall(folder, filter="data")
    return folder if os.path.isdir(os.path.join(folder, "train")) else None


def stage_ssl_knn(args, budget, results, log):
    folder = None if args.dry_run else cifar_folder()
    if not args.dry_run and folder is None:
        results["ssl_knn"] = f"no data: carry ../shared/data/cifar10-jpeg-train.tar.gz as {CIFAR_ARCHIVE}"
        return
    out = os.path.join(args.out, f"ssl_knn_{gpu_suffix(results)}.md")
    run_script(args, budget, ["benchmarks/ssl_knn.py", "--device", "cuda", "--recipe", SSL_RECIPE,
                              "--epochs", str(SSL_EPOCHS), "--max-time", str(SSL_MAX_S), "--probe-lr", "sweep",
                              "--set", *SSL_SET, "--out", out], "ssl_knn", results, log)


STAGES = {"install": stage_install, "check": stage_check, "tests": stage_tests, "proof": stage_proof,
          "kernels": stage_kernels, "attention": stage_attention, "backend": stage_backend, "models": stage_models,
          "profile": stage_profile, "ssl_step": stage_ssl_step, "ssl_knn": stage_ssl_knn, "probe": stage_probe,
          "stalls": stage_stalls, "fp8_stalls": stage_fp8_stalls, "step": stage_step, "shapes": stage_shapes,
          "sanitize": stage_sanitize}
LOGS = {"shapes": "shapes.log", "tests": "tests.log", "check": "check.log"}  # the others: scripts.log


def summary(call, results):
    env = results["environment"]
    lines = [f"# GPU sitting, {call}{' (dry run: CUDA parts skipped)' if env['dry_run'] else ''}", "",
             *(f"- {k}: {v}" for k, v in env.items() if k != "fingerprints"),
             f"- kernels: {';'.join(f'{k}={v}' for k, v in env['fingerprints'].items())}", "",
             "| stage | budget s | used s | what |", "|---|---|---|---|"]
    lines += [f"| {s} | {b} | {results['used'].get(s, 0)} | {what} |" for s, b, what in PLAN[call]]
    if "shapes" in results:
        lines += ["", "## Attention shapes", *(f"- {v}: `{k}`" for k, v in results["shapes"].items())]
    if "files" in results:
        lines += ["", "## Test files", "| family | file | verdict | passed | failed | skipped | s |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['family'] or '(cross)'} | {r['file']} | {r['verdict']} | {r['counts'].get('passed', '')} | "
                  f"{r['counts'].get('failures', 0) + r['counts'].get('errors', 0) if r['counts'] else ''} | "
                  f"{r['counts'].get('skipped', '')} | {r.get('seconds', '')} |" for r in results["files"]]
    if "families" in results:
        lines += ["", "## Self-tests and test files", "| family | vitfast.check --gpu | test files | agree | detail |",
                  "|---|---|---|---|---|"]
        lines += [f"| {f} | {v['self_test']} | {v['test_files']} | "
                  f"{'yes' if (v['self_test'] == 'recorded') == (v['test_files'] == 'passed') else 'NO'} | "
                  f"{v['detail']} |"
                  for f, v in results["families"].items()]
    for key in ("install", "check", "sanitize", "kernels", "attention", "profile", "models", "backend", "proof",
                "ssl_step", "ssl_knn", "probe", "stalls", "fp8_stalls", "step"):
        if key in results:
            lines += ["", f"## {key}", str(results[key])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("call", choices=sorted(PLAN))
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "benchmarks", "results", "gpu"))
    p.add_argument("--dry-run", action="store_true", help="print the plan and run the plumbing, CUDA parts skipped")
    # vitfast's folders, spelled here: vitfast is imported only after the carried build is unpacked
    p.add_argument("--data-dir", default=os.path.join(ROOT, "vitfast", "kernels", "dispatch_data"),
                   help="where the check call's dispatch rows for this GPU go")
    p.add_argument("--records-dir", default=os.path.join(ROOT, "vitfast", "kernels", "records"),
                   help="where the check call's records go (<dir>/<gpu key>.json)")
    p.add_argument("--workers", type=int, default=6, help="test files run at once (stage tests)")
    p.add_argument("--stages", help="the call's stages to run, comma-separated (default: all; a rerun's budget)")
    args = p.parse_args(argv)
    planned = [s for s, _, _ in PLAN[args.call]]
    stages = args.stages.split(",") if args.stages else planned
    if not set(stages) <= set(planned):
        p.error(f"--stages: the {args.call} call's stages are {', '.join(planned)}; got {args.stages}")
    assert sum(b for _, b, _ in PLAN[args.call]) <= CALL_LIMIT_S and len(FILES[args.call]) <= 8
    print(f"plan for {args.call} (limit {CALL_LIMIT_S} s; files into {args.out}: {', '.join(FILES[args.call])}):")
    for stage, budget, what in PLAN[args.call]:
        print(f"  {stage:<9} {budget:>4} s  {what}")
    os.makedirs(args.out, exist_ok=True)
    for path in ([] if args.dry_run else unpack_carried()):  # a dry run leaves the checkout's build alone
        print(f"unpacked {os.path.relpath(path, ROOT)}")
    share_the_machine(args.workers)
    results = {"environment": environment(args.dry_run), "used": {}}
    logs = {}
    for stage, budget, _ in PLAN[args.call]:
        if stage not in stages:
            continue
        start = time.time()
        STAGES[stage](args, budget, results, logs.setdefault(LOGS.get(stage, "scripts.log"), []))
        results["used"][stage] = round(time.time() - start)
        print(f"  {stage} done in {results['used'][stage]} s")
    for name, entries in logs.items():
        if entries or name in FILES[args.call]:
            with open(os.path.join(args.out, name), "w") as f:
                f.write("\n".join(entries) + "\n")
    if "files" in results:
        results["families"] = agreement(results, args.records_dir)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    text = summary(args.call, results)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
