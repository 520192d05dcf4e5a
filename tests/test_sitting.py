"""The GPU sitting's plumbing (tools/sitting.py, gpu_checks.sh), run here with the CUDA parts
skipped: the plan and its budgets, the files each call leaves, and the check call's comparison of
vitfast.check --gpu's records with the verdicts of the families' test files."""
import json
import os
import subprocess
import sys

import pytest

import vitfast
from vitfast.kernels import fingerprints, records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "benchmarks")]  # sitting; ssl_knn
import sitting  # noqa: E402


def test_every_kernel_family_has_its_tests_and_each_call_fits_its_limit():
    assert set(sitting.FAMILY_TESTS) == set(fingerprints.FAMILIES)
    for files, _ in sitting.FAMILY_TESTS.values():
        assert files and all(os.path.isfile(os.path.join(ROOT, f)) for f in files)
    for call, stages in sitting.PLAN.items():
        assert sum(budget for _, budget, _ in stages) <= sitting.CALL_LIMIT_S <= 9 * 60
        assert len(sitting.FILES[call]) <= 8


@pytest.mark.parametrize("call", ["check", "bench", "ssl", "debug", "epilogue"])
def test_the_dry_run_prints_the_plan_and_leaves_only_its_files(call, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", "tools/gpu_checks.sh", call, "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for stage, budget, _ in sitting.PLAN[call]:
        assert f"{stage}" in done.stdout and f"{budget} s" in done.stdout
    written = sorted(os.listdir(out))
    assert len(written) <= 8 and "summary.md" in written
    summary = (out / "summary.md").read_text()
    assert "dry run" in summary and vitfast.kernel_fingerprints()["attention_sm90"] in summary
    if call == "ssl":  # the commands it would run take their arguments (the recipe, the table's name)
        import ssl_knn

        for script in ("bench_ssl_step.py", "ssl_knn.py"):
            assert f"skipped (dry run): python benchmarks/{script} --device cuda" in summary
        line = next(line for line in summary.splitlines() if "benchmarks/ssl_knn.py" in line)
        parsed = ssl_knn.parse_args(line.split("benchmarks/ssl_knn.py")[1].split())
        assert (parsed.recipe, parsed.max_time, parsed.out) == ("mocov3_cifar10,swav_cifar10", sitting.SSL_MAX_S,
                                                                str(out / "ssl_knn_none.md"))
    if call == "check":  # pip install of the checkout, then the user's command as they type it
        assert "skipped (dry run): python -m pip install -q --no-build-isolation --no-deps" in summary
        assert "skipped (dry run): python -m vitfast.check --gpu (the package in the checkout)" in summary
        assert "skipped (dry run): python benchmarks/bench_models.py" in summary
    if call == "bench":  # the tables time every kernel; the models run what the records allow
        for script in ("bench_kernels.py", "bench_attention.py", "bench_models.py", "profile_backend.py"):
            assert f"skipped (dry run): python benchmarks/{script}" in summary
    if call == "epilogue":  # the probe opted in, ncu with its details, the step as a user runs it
        assert "skipped (dry run): python tools/epilogue_probe.py --out" in summary
        assert "--print-details all" in summary and "tools/epilogue_probe.py --once" in summary
        assert "--section MemoryWorkloadAnalysis --print-details all" in summary and "--once --fp8-only" in summary
        assert "skipped (dry run): python benchmarks/profile_step.py --model vit_base_patch16_224" in summary
    if call == "debug":  # each many-tile case named, the first GPU run's failing shape among them
        assert "33-5-129" in summary and "- skipped (dry run): `tests/ops/test_attention_sm90.py::" in summary
    if call == "check":
        results = json.loads((out / "results.json").read_text())
        assert {r["file"] for r in results["files"]} >= {f for files, _ in sitting.FAMILY_TESTS.values() for f in files}
        probe = results["files"][-1]  # one CPU file through the real path: its own process, its junit counts
        assert probe["file"] == sitting.DRY_RUN_PROBE and probe["verdict"] == "ok" and probe["counts"]["passed"] > 0
        assert set(results["families"]) == set(sitting.FAMILY_TESTS)
        assert {v["self_test"] for v in results["families"].values()} == {"not recorded"}
        assert "| quantizers | not recorded | failed | yes |" in summary


def test_a_rerun_runs_the_stages_it_names_and_refuses_others(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", "tools/gpu_checks.sh", "check", "--dry-run", "--stages", "install,proof",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.md").read_text()
    assert "## install" in summary and "## proof" in summary and "## check" not in summary
    assert "## Test files" not in summary and "- targets: " in summary
    wrong = subprocess.run(["bash", "tools/gpu_checks.sh", "check", "--dry-run", "--stages", "kernels",
                            "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2
    assert "--stages: the check call's stages are install, check, tests, proof" in wrong.stderr


def file_result(family, file, verdict, passed=3):
    return dict(family=family, file=file, env={}, verdict=verdict,
                counts=dict(tests=passed, failures=0, errors=0, skipped=0, passed=passed))


def test_a_family_passes_its_test_files_only_when_every_file_of_it_passed():
    files = [file_result("quantizers", f, "ok") for f in sitting.FAMILY_TESTS["quantizers"][0]]
    files += [file_result("layer_norm", "tests/ops/test_layer_norm.py", "crash (exit -11)")]
    files += [file_result("scaled_cast", "tests/ops/test_scaled_cast.py", "empty", passed=0)]  # every test skipped
    files += [file_result("gemm_mma", f, v) for f, v in zip(sitting.FAMILY_TESTS["gemm_mma"][0], ("ok", "hang"))]
    verdicts = sitting.family_verdicts(files)
    assert [f for f, (ok, _) in verdicts.items() if ok] == ["quantizers"]
    assert verdicts["quantizers"][1] == "9 passed in 3 file(s)"
    assert "test_layer_norm.py: crash" in verdicts["layer_norm"][1]
    assert not verdicts["attention_sm90"][0]  # no file ran


def test_the_check_call_sets_the_self_tests_records_beside_the_test_files(tmp_path):
    """What vitfast.check --gpu recorded for this GPU's key at this build, family by family, against the
    suite's verdict: a record of another build or another key is no record; a disagreement is named."""
    built = vitfast.kernel_fingerprints()
    records.write(str(tmp_path), "sm_90x132", [
        {"family": "quantizers", "fingerprint": built["quantizers"]},
        {"family": "layer_norm", "fingerprint": "0" * 16}])  # another build
    records.write(str(tmp_path), "sm_90x114", [{"family": "gemm_mma", "fingerprint": built["gemm_mma"]}])
    env = dict(gpu="NVIDIA H200", key="sm_90x132", fingerprints=built, driver="580", torch="2.11.0+cu130",
               date="2026-11-27 10:00 UTC", commit="abc1234", dry_run=False)
    files = [file_result("quantizers", f, "ok") for f in sitting.FAMILY_TESTS["quantizers"][0]]
    files += [file_result("layer_norm", "tests/ops/test_layer_norm.py", "ok")]
    files += [file_result("gemm_mma", f, "ok") for f in sitting.FAMILY_TESTS["gemm_mma"][0]]
    results = {"environment": env, "check": "ok", "files": files, "used": {}}
    results["families"] = sitting.agreement(results, str(tmp_path))
    rows = {f: (v["self_test"], v["test_files"]) for f, v in results["families"].items()}
    assert rows["quantizers"] == ("recorded", "passed")
    assert rows["layer_norm"] == rows["gemm_mma"] == ("not recorded", "passed")
    assert rows["attention_sm90"] == ("not recorded", "failed")
    summary = sitting.summary("check", results)
    assert "| quantizers | recorded | passed | yes |" in summary
    assert "| layer_norm | not recorded | passed | NO |" in summary


def test_what_the_check_recorded_in_its_cache_goes_into_the_package(tmp_path):
    """The check stage's vitfast.check --gpu records into its own user cache, as a user's does; its records
    of this build and key go into the package's records (one per family) and its dispatch rows beside the
    package's, where the later stages and the committed package read them."""
    built = vitfast.kernel_fingerprints()
    cache, package = tmp_path / "cache", tmp_path / "package"
    records.write(str(cache / "records"), "sm_90x132", [
        {"family": "layer_norm", "fingerprint": built["layer_norm"], "date": "2026-11-27"},
        {"family": "gemm_mma", "fingerprint": "0" * 16, "date": "2026-11-20"}])  # another build, kept in a cache
    records.write(str(package / "records"), "sm_90x132", [
        {"family": "layer_norm", "fingerprint": "1" * 16},
        {"family": "quantizers", "fingerprint": built["quantizers"]}])
    (cache / "dispatch").mkdir()
    (cache / "dispatch" / "nvidia_h200.json").write_text('{"gpu": "NVIDIA H200", "ops": {}}')
    env = dict(gpu="NVIDIA H200", key="sm_90x132", fingerprints=built)
    written = sitting.ship_check(str(cache), env, str(package / "records"), str(package / "data"))
    assert written == [str(package / "records" / "sm_90x132.json"), str(package / "data" / "nvidia_h200.json")]
    shipped = {r["family"]: r["fingerprint"] for r in records.read(str(package / "records"))["sm_90x132"]}
    assert shipped == {"layer_norm": built["layer_norm"], "quantizers": built["quantizers"]}
    assert sitting.ship_check(str(tmp_path / "empty"), env, str(package / "records"), str(package / "data")) == []


def test_tables_are_named_by_gpu_kind():
    assert sitting.gpu_kind("NVIDIA H100 80GB HBM3") == "h100"
    assert sitting.gpu_kind("NVIDIA H200") == "h200"
    assert sitting.gpu_kind("NVIDIA A100-SXM4-80GB") == "a100"
    assert sitting.gpu_kind("NVIDIA L40S") == "l40s"


def test_carried_builds_are_unpacked_into_place(tmp_path, monkeypatch):
    import lzma

    monkeypatch.setenv("VITFAST_DEBUG_SYNC_SO", "")  # so the test's own setting is undone after it
    monkeypatch.delenv("VITFAST_DEBUG_SYNC_SO")
    (tmp_path / ".gpu").mkdir()
    release, debug = os.urandom(4096), os.urandom(1000)
    (tmp_path / ".gpu" / "_C.abi3.so.xz").write_bytes(lzma.compress(release))
    (tmp_path / ".gpu" / "debug_sync.so.xz").write_bytes(lzma.compress(debug))
    written = sitting.unpack_carried(str(tmp_path))
    assert sorted(written) == sorted([str(tmp_path / "vitfast" / "_C.abi3.so"),
                                      str(tmp_path / ".gpu" / "debug_sync.so")])
    assert (tmp_path / "vitfast" / "_C.abi3.so").read_bytes() == release
    assert os.environ["VITFAST_DEBUG_SYNC_SO"] == str(tmp_path / ".gpu" / "debug_sync.so")
    assert sitting.unpack_carried(str(tmp_path / "nothing")) == []


def test_the_ssl_call_unpacks_the_carried_cifar_archive_once(tmp_path):
    import io
    import tarfile

    assert sitting.cifar_folder(str(tmp_path)) is None  # neither the folder nor the archive
    (tmp_path / ".gpu").mkdir()
    with tarfile.open(tmp_path / sitting.CIFAR_ARCHIVE, "w:gz") as tar:  # the layout of ../shared/data's
        info = tarfile.TarInfo("train/cat/0001.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"jpg"))
    folder = sitting.cifar_folder(str(tmp_path))
    assert folder == str(tmp_path / "data" / "cifar10") and (tmp_path / "data/cifar10/train/cat/0001.jpg").is_file()
    (tmp_path / sitting.CIFAR_ARCHIVE).unlink()  # there already: not unpacked again
    assert sitting.cifar_folder(str(tmp_path)) == folder


def test_sanitizer_verdicts_name_racechecks_warnings_apart_from_errors():
    warnings_only = "========= RACECHECK SUMMARY: 100 hazards displayed (0 errors, 282 warnings)\n"
    assert sitting.sanitizer_verdict(9, warnings_only) == "clean (282 warnings)"
    assert sitting.sanitizer_verdict(9, "RACECHECK SUMMARY: 3 hazards displayed (1 error, 2 warnings)") == "exit 9"
    assert sitting.sanitizer_verdict(0, "========= ERROR SUMMARY: 0 errors") == "clean"
    assert sitting.sanitizer_verdict(9, "========= ERROR SUMMARY: 720 errors") == "exit 9"
    assert sum(share for share, _ in sitting.SANITIZERS.values()) <= 1.0
    assert "--num-cuda-barriers" in sitting.SANITIZERS["synccheck"][1]


def test_a_case_stopped_by_the_stages_budget_is_a_cut_not_a_hang(tmp_path):
    slow = tmp_path / "test_slow.py"
    slow.write_text("import time\n\ndef test_slow():\n    time.sleep(60)\n")
    log = []
    cut, _, seconds = sitting.run_pytest(str(slow), {}, 4, log, cut=True)
    hang, _, _ = sitting.run_pytest(str(slow), {}, 4, log)
    assert cut.startswith("cut") and hang == "hang" and seconds < 30
    assert ": cut (the stage's budget ran out) in" in log[0] and ": hang in" in log[1]




def test_a_stage_cut_at_its_limit_takes_its_children_with_it(tmp_path):
    """vitfast.check --gpu runs its self-tests and timing in processes of its own: cut at the stage's
    limit, they must not go on using the GPU under the next stage."""
    import time

    pid_file = tmp_path / "child.pid"
    parent = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "print('started', flush=True)\n"
              "time.sleep(120)\n")
    rc, text = sitting.run_group([sys.executable, "-c", parent], str(tmp_path), dict(os.environ), 5)
    assert rc is None and "started" in text
    child = int(pid_file.read_text())
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the stage's child {child} outlived the stage")
    done = sitting.run_group([sys.executable, "-c", "print('done')"], str(tmp_path), dict(os.environ), 30)
    assert done == (0, "done\n")
