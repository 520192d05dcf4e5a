"""`python -m vitfast.check --gpu`'s plumbing without a GPU: the one-line refusal, the plan, and the
process / time limit / verdict path run on the real self-test of a family with CPU kernels (the
quantizers), the CUDA families skipped and named. The self-tests' own cases run on the CPU in
test_selftests.py."""
import os
import subprocess
import sys

import pytest

import vitfast
from vitfast.kernels import check_gpu, gate, records, selftest
from vitfast.kernels.selftests import all_selftests, quantizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check(*args, **env):
    return subprocess.run([sys.executable, "-m", "vitfast.check", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env})


def test_without_a_gpu_it_says_so_in_one_line():
    out = check("--gpu", CUDA_VISIBLE_DEVICES="")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    if vitfast.has_cuda_kernels():
        assert lines[0].startswith("vitfast.check: --gpu: no CUDA GPU is visible here"), lines
    else:
        assert lines[0].startswith("vitfast.check: --gpu: this build of vitfast has no CUDA kernels"), lines


@pytest.mark.parametrize("flag", [["--quick"], ["--families", "quantizers"], ["--record-into", "x"]])
def test_its_options_need_gpu(flag):
    out = check(*flag)
    assert out.returncode == 2 and out.stderr.strip().endswith("belongs to --gpu, which was not given")


def test_every_family_of_the_build_has_a_self_test_with_a_stated_budget():
    tests = all_selftests()
    assert set(tests) == set(vitfast.kernel_fingerprints())
    for family, test in tests.items():
        assert test.kernels and test.replaces and 0 < test.budget_s <= 60, family
    # the default run's budget: the families 3 at once within 3 minutes on an H100 (start-ups included)
    assert sum(t.budget_s + 10 for t in tests.values()) / check_gpu.JOBS <= 180


def test_the_plan_names_what_does_not_run_on_this_gpu():
    families = list(vitfast.kernel_fingerprints())
    hopper = dict((f, why) for f, _, why in check_gpu.plan((9, 0), True))
    assert list(hopper) == families and not any(hopper.values())
    ada = dict((f, why) for f, _, why in check_gpu.plan((8, 9), True))
    assert {f for f, why in ada.items() if why} == {"attention_sm90", "gemm_sm90", "fp8_gemm_sm90"}
    assert set(ada.values()) == {"", "not built for this GPU"}
    no_cutlass = dict((f, why) for f, _, why in check_gpu.plan((9, 0), False))
    assert {f for f, why in no_cutlass.items() if why} == {"attention_sm90", "gemm_sm90", "fp8_gemm_sm90"}
    turing = dict((f, why) for f, _, why in check_gpu.plan((7, 5), True))
    assert all(turing.values())
    assert check_gpu.plan((9, 0), True, ["layer_norm"])[0][0] == "layer_norm"


def test_a_family_runs_in_its_own_process_and_passes():
    """The quantizers' real self-test (CPU kernels against their twins) through the path the GPU takes."""
    planned = [(f, t, why if f == "quantizers" else "skipped: needs a GPU")
               for f, t, why in check_gpu.plan(None, False)]
    seen = []
    verdicts = check_gpu.run(planned, device="cpu", quick=True, on_verdict=seen.append)
    by_family = {v.family: v for v in verdicts}
    assert [v.family for v in verdicts] == [f for f, _, _ in planned]
    q = by_family["quantizers"]
    assert q.passed and q.cases > 50 and q.failed == 0 and q.seconds > 0, q
    assert seen == [q]  # only what ran is reported as it ends
    assert all(v.status == "skipped: needs a GPU" for f, v in by_family.items() if f != "quantizers")
    table = "\n".join([check_gpu.header()] + [check_gpu.row(v) for v in verdicts])
    assert "quantizers      passed" in table and "attention_sm90  skipped: needs a GPU" in table


def test_a_hang_is_cut_at_its_limit_and_named():
    v = check_gpu.run_family("quantizers", all_selftests()["quantizers"], device="cpu", limit=1.0)
    assert v.status == "hung" and v.detail.startswith("past its limit of 1 s"), v


def test_a_crash_is_named_with_its_last_line():
    """A process that dies (here: the extension it loads is no build) is a crash, with what it said."""
    v = check_gpu.run_family("quantizers", all_selftests()["quantizers"], device="cpu", quick=True,
                             env={"VITFAST_EXTENSION": os.path.join(ROOT, "README.md")})
    assert v.status == "crashed" and v.detail.startswith("exit status 1"), v
    assert "vitfast's compiled extension (vitfast._C) is missing" in v.detail


def test_a_wrong_result_fails_the_family_naming_its_cases(monkeypatch):
    """The child's events for a twin that is off by one ulp: the verdict names the failing cases."""
    real = quantizers.ops.scaled_cast_ref

    def off(x, scale, dtype):
        out = real(x, scale, dtype)
        return (out.view(__import__("torch").uint8) ^ 1).view(dtype) if dtype != __import__("torch").int8 else out

    monkeypatch.setattr(quantizers.ops, "scaled_cast_ref", off)
    lines = []
    failed = selftest.run_cases("scaled_cast", "cpu", True, lambda e: lines.append(__import__("json").dumps(e)))
    assert failed == selftest.MAX_FAILURES  # it stops after a few: they name the fault
    v = check_gpu.verdict("scaled_cast", 1, "\n".join(lines), "", False, 2.0, 60)
    assert v.status == "failed" and v.failed == selftest.MAX_FAILURES
    first = "scaled_cast to torch.float8_e4m3fn at scale 1 fp32 as torch.float32"
    assert v.detail.startswith(f"{first}: 16399 of 16399 differ, e.g. ") and v.detail.count(first) == 1, v.detail


def test_a_process_that_ends_without_its_last_line_crashed_in_its_case():
    out = '{"start": "a"}\n{"case": "a", "ok": true, "detail": "", "s": 0.1}\n{"start": "b"}\n'
    v = check_gpu.verdict("layer_norm", -11, out, "Fatal Python error: Segmentation fault\n", False, 3.0, 60)
    assert v.status == "crashed" and v.cases == 1
    assert v.detail == "exit status -11 in case 'b': Fatal Python error: Segmentation fault"
    v = check_gpu.verdict("layer_norm", None, out, "", True, 60.0, 60)
    assert v.status == "hung" and v.detail == "past its limit of 60 s in case 'b'"


def test_a_family_whose_kernels_never_launched_is_not_passed():
    """Every case held, but through the library path: nothing proves our kernels on the GPU."""
    out = '{"start": "a"}\n{"case": "a", "ok": true, "detail": "", "s": 0.1}\n{"done": true, "cases": 1, ' \
          '"failed": 0, "kernels": []}\n'
    assert check_gpu.verdict("layer_norm", 0, out, "", False, 1.0, 60).passed  # the CPU has no kernels to see
    v = check_gpu.verdict("layer_norm", 0, out, "", False, 1.0, 60, on_gpu=True)
    assert v.status == "no kernel launched" and not v.passed
    ran = out.replace('"kernels": []', '"kernels": ["void vitfast::layer_norm_fwd_fixed<768>(...)"]')
    assert check_gpu.verdict("layer_norm", 0, ran, "", False, 1.0, 60, on_gpu=True).passed


def test_what_passed_is_recorded_for_this_build_and_key_and_the_gate_then_runs_it(tmp_path, monkeypatch):
    """main()'s last steps, past the GPU: the passing families' records (this build's fingerprints, the
    machine as information) written under the key, read back by the gate; a failed family gets none."""
    monkeypatch.delenv(gate.OPT_IN, raising=False)
    verdicts = [check_gpu.Verdict("layer_norm", "passed", cases=12, seconds=3.5),
                check_gpu.Verdict("gemm_sm90", "failed", "a case", cases=3, failed=1)]
    recs = check_gpu.to_records(verdicts, "NVIDIA H100 80GB HBM3")
    assert [r["family"] for r in recs] == ["layer_norm"]
    r = recs[0]
    assert r["fingerprint"] == vitfast.kernel_fingerprints()["layer_norm"] and r["gpu"] == "NVIDIA H100 80GB HBM3"
    assert r["torch"] and r["vitfast"] == vitfast.__version__ and r["tests"].endswith("12 cases passed in 3.5 s")
    records.write(str(tmp_path), "sm_90x132", recs)
    try:
        assert gate.install([str(tmp_path)]) == {"sm_90x132": ["layer_norm"]}
        assert gate.allowed("layer_norm", "sm_90x132", warn=False)
        assert not gate.allowed("gemm_sm90", "sm_90x132", warn=False)
        assert not gate.allowed("layer_norm", "sm_90x114", warn=False)
    finally:
        gate.install()
