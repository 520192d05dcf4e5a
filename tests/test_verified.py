"""Nothing unverified runs by default (vitfast.verified, csrc/kernel_gate.h): a kernel family runs on a GPU
kind only where that kind's record names the fingerprint of the sources this build compiled, or under
VITFAST_UNVERIFIED_KERNELS=1; elsewhere its ops take the library path (or the ATen composite, or the
CPU twin) after one warning naming the command that verifies them. Checked here, without a GPU, through
the same C++ choices the CUDA entry points make (attention_path, gemm_path and fp8_path
given a GPU's name; vitfast.verified.allowed) and the model backend's dispatch, with record files the
tests write."""
import json
import warnings

import pytest
import torch

import vitfast
from vitfast import verified
from vitfast.layers import dispatch

GPU = "NVIDIA H100 80GB HBM3"
OTHER = "NVIDIA A100-SXM4-80GB"
STALE = "0123456789abcdef"  # a fingerprint no build has


def write_records(folder, gpu, families, **rows):
    """A data file for `gpu` whose records name this build's fingerprint for each family of `families`
    (a family -> True) or a stale one (-> False); rows: dispatch rows by op, measured at this build."""
    built = vitfast.kernel_fingerprints()
    data = {"gpu": gpu, "source": {"fingerprints": dict(built)}, "rule": "test", "ops": rows,
            "verified": {f: {"fingerprint": built[f] if ok else STALE, "commit": "test", "date": "2026-11-25",
                             "tests": "written by tests/test_verified.py"} for f, ok in families.items()}}
    (folder / (dispatch.gpu_slug(gpu) + ".json")).write_text(json.dumps(data))


@pytest.fixture
def records(tmp_path, monkeypatch):
    """install() from a folder of test records (restoring the package's own afterwards); the opt-in off."""
    monkeypatch.delenv(verified.OPT_IN, raising=False)
    monkeypatch.setattr(dispatch, "DATA_DIR", str(tmp_path))
    monkeypatch.setattr(dispatch, "_data", {})

    def install(**env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return verified.install(str(tmp_path))

    yield tmp_path, install
    monkeypatch.undo()
    verified.install()


def caught(fn, *args, **kw):
    """fn's result and the warnings it raised in Python."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(*args, **kw)
    return out, [str(x.message) for x in w]


def refusals(capfd):
    """The gate's warnings a C++ choice printed since the last call (a C++ warning from an op called
    through torch.ops reaches stderr, not Python's warnings)."""
    return [line for line in capfd.readouterr().err.splitlines() if "no record shows these CUDA kernels" in line]


def attention_path(gpu, N=197, d=64, **kw):
    return torch.ops.vitfast.attention_path(9, 0, torch.bfloat16, N, d, sm90_built=True, gpu=gpu, **kw)


def gemm_path(gpu, **kw):
    return torch.ops.vitfast.gemm_path(9, 0, torch.bfloat16, 50432, 3072, 768, sm90_built=True, gpu=gpu, **kw)


def test_the_records_name_the_families_whose_fingerprints_match_this_build(records):
    folder, install = records
    write_records(folder, GPU, {"gemm_sm90": True, "gemm_mma": True, "layer_norm": False})
    assert install() == {GPU: ["gemm_mma", "gemm_sm90"]}
    assert verified.allowed("gemm_sm90", GPU, warn=False)
    assert not verified.allowed("layer_norm", GPU, warn=False)  # recorded at other sources: stale
    assert not verified.allowed("attention_sm90", GPU, warn=False)  # never recorded
    assert not verified.allowed("gemm_sm90", OTHER, warn=False)  # another GPU kind: its own records


def test_a_stale_fingerprint_runs_the_library_path_and_warns_once(records, capfd):
    folder, install = records
    write_records(folder, GPU, {"attention_sm90": False, "attention_mma": False, "gemm_sm90": False,
                                "gemm_mma": True, "fp8_gemm_sm90": False})
    install()
    refusals(capfd)
    assert attention_path(GPU) == "aten"  # sm90 -> mma.sync -> the ATen composite, each refused
    messages = refusals(capfd)
    assert len(messages) == 1
    message = messages[0]
    assert GPU in message and verified.VERIFY_COMMAND in message and verified.OPT_IN + "=1" in message
    for family in ("attention_sm90", "attention_mma", "gemm_sm90", "fp8_gemm_sm90", "quantizers", "layer_norm_fp8"):
        assert family in message  # every family refused on this GPU kind, in the one warning
    assert "gemm_mma" not in message
    # the same GPU kind warns once, whatever is refused next, in C++ or in Python
    assert gemm_path(GPU) == "mma_sync"
    assert torch.ops.vitfast.fp8_path(9, 0, 50432, 2304, 768, sm90_built=True, gpu=GPU) == "aten"
    assert caught(verified.allowed, "layer_norm", GPU) == (False, [])
    assert refusals(capfd) == []
    # another kind warns for itself; not being a Hopper GPU, it names no sm90 family
    allowed, messages = caught(verified.allowed, "quantizers", OTHER, False)
    assert not allowed and len(messages) == 1 and OTHER in messages[0] and "_sm90" not in messages[0]


def test_a_matching_fingerprint_runs_ours_without_a_warning(records, capfd):
    folder, install = records
    write_records(folder, GPU, {f: True for f in vitfast.kernel_fingerprints()})
    install()
    assert attention_path(GPU) == "sm90"
    assert attention_path(GPU, logits=True) == "mma_sync"  # attention_path.h's own choice
    assert gemm_path(GPU) == "sm90"
    assert torch.ops.vitfast.fp8_path(9, 0, 50432, 2304, 768, sm90_built=True, gpu=GPU) == "sm90"
    assert caught(verified.allowed, "quantizers", GPU) == (True, [])
    assert refusals(capfd) == []


def test_the_opt_in_runs_ours_everywhere(records, capfd):
    folder, install = records
    write_records(folder, GPU, {"attention_sm90": False})
    install(**{verified.OPT_IN: "1"})
    assert attention_path(GPU) == "sm90"
    assert gemm_path(OTHER) == "sm90"
    assert caught(verified.allowed, "layer_norm_fp8", OTHER) == (True, [])
    assert refusals(capfd) == []


def test_without_records_nothing_is_verified(records, capfd):
    _, install = records
    assert install() == {}
    assert gemm_path(GPU) == "aten" and len(refusals(capfd)) == 1


def test_an_unknown_family_is_an_error_naming_it(records):
    with pytest.raises(RuntimeError, match="no kernel family 'gemm_sm100'"):
        verified.allowed("gemm_sm100", GPU)


LN_ROW = dict(D=768, residual=False, grad=False, dtype="bfloat16", ours_ms=0.06, library_ms=0.11,
              library="F.layer_norm", use="vitfast")
GEMM_ROW = dict(K=3072, N=768, grad=False, dtype="bfloat16", ours_ms=0.3, library_ms=0.4, library="F.linear + r",
                use="vitfast", config="coop_128x256_2x1")
LN = dict(D=768, residual=False, grad=False, dtype="bfloat16")
FC2 = dict(K=3072, N=768, grad=False, dtype="bfloat16")


def test_the_backend_takes_ours_only_where_verified_and_measured_at_these_sources(records):
    folder, install = records
    write_records(folder, GPU, {"gemm_sm90": True, "gemm_mma": True, "layer_norm": False},
                  layer_norm=[LN_ROW], linear_residual=[GEMM_ROW])
    install()
    assert dispatch.measured("layer_norm", GPU, **LN) == "auto"  # what the data says ...
    choice, messages = caught(dispatch.choice, "layer_norm", GPU, **LN)
    assert choice is None and len(messages) == 1 and "layer_norm" in messages[0]  # ... but unverified
    assert dispatch.choice("linear_residual", GPU, **FC2) == "coop_128x256_2x1"

    # measured at other sources: the timings describe other kernels, so the library path (verified or not)
    data = json.loads((folder / (dispatch.gpu_slug(GPU) + ".json")).read_text())
    data["source"]["fingerprints"]["gemm_mma"] = STALE
    (folder / (dispatch.gpu_slug(GPU) + ".json")).write_text(json.dumps(data))
    dispatch._data.clear()
    install()
    assert dispatch.measured("linear_residual", GPU, **FC2) == "coop_128x256_2x1"
    assert dispatch.choice("linear_residual", GPU, **FC2) is None


def test_the_opt_in_lets_the_backend_take_current_measurements(records):
    folder, install = records
    write_records(folder, GPU, {}, layer_norm=[LN_ROW])
    install()
    assert caught(dispatch.choice, "layer_norm", GPU, **LN)[0] is None
    install(**{verified.OPT_IN: "1"})
    assert caught(dispatch.choice, "layer_norm", GPU, **LN) == ("auto", [])


def test_this_checkouts_h100_records():
    """The committed H100 records (from the 2026-11-24 sitting at 50dff3b) name sources every family has
    changed since (the fingerprints cover the launchers and C++ gradients since 8e44d27), so none runs
    by default on an H100; those no sitting passed there (the sm90 attention, scaled_cast, the FP8
    chain) have no record at all."""
    recs = verified.records()[GPU]
    assert {r["commit"] for r in recs.values()} == {"50dff3b"}
    assert set(recs) == {"quantizers", "attention_mma", "layer_norm", "gemm_mma", "gemm_sm90"}
    assert not {"attention_sm90", "layer_norm_fp8", "fp8_gemm_sm90", "scaled_cast"} & set(recs)
    now = verified.verified_families(verified.records(), vitfast.kernel_fingerprints())[GPU]
    assert now == []


def vitfast_kernels(fn):
    """The names of the CUDA kernels of ours (namespace vitfast) that fn launched, and fn's result."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = fn()
        torch.cuda.synchronize()
    return {e.name for e in prof.events() if "vitfast" in e.name}, out


def raw(t):
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def gpu_calls():
    """One call of each family's op on the GPU, small shapes: {family: call}."""
    from vitfast import ops
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(64, 256, device="cuda", generator=g).bfloat16()
    w = torch.randn(256, 256, device="cuda", generator=g).bfloat16() / 16
    ln_w, ln_b = torch.ones(256, device="cuda"), torch.zeros(256, device="cuda")
    q = torch.randn(2, 3, 197, 64, device="cuda", generator=g).bfloat16()
    s = torch.ones(1, device="cuda")
    x8, w8 = ops.scaled_cast(x, s, torch.float8_e4m3fn), ops.scaled_cast(w, s, torch.float8_e4m3fn)
    calls = {
        "quantizers": lambda: ops.float_quantize(x.float(), 4, 3),
        "scaled_cast": lambda: ops.scaled_cast(x, s, torch.float8_e4m3fn),
        "layer_norm": lambda: ops.layer_norm(x, ln_w, ln_b),
        "layer_norm_fp8": lambda: ops.layer_norm_fp8(x, ln_w, ln_b, s),
        "attention_mma": lambda: ops.attention(q, q, q, return_logits=True)[0],  # logits: mma.sync only
        "gemm_sm90": lambda: ops.linear_gelu(x, w),
        "fp8_gemm_sm90": lambda: ops.fp8_linear(x8, w8, s, s.expand(256).contiguous()),
    }
    if torch.cuda.get_device_capability() != (9, 0):  # the sm90 families run nowhere else
        del calls["gemm_sm90"], calls["fp8_gemm_sm90"]
        calls["gemm_mma"] = lambda: ops.linear_gelu(x, w)
    return calls


@pytest.mark.skipif(not (torch.cuda.is_available() and vitfast.has_cuda_kernels()),
                    reason="needs a GPU and vitfast's CUDA kernels")
def test_on_the_gpu_a_refused_family_launches_none_of_our_kernels_and_the_opt_in_does(records, capfd):
    """Nothing recorded: each op runs its library path / ATen composite / CPU twin (no kernel of ours
    launched; one warning for this GPU kind on stderr); opted in, the same calls launch ours and agree."""
    _, install = records
    install()
    refused = {}
    for family, call in gpu_calls().items():
        launched, refused[family] = vitfast_kernels(call)
        assert not launched, (family, launched)
    assert len(refusals(capfd)) == 1
    install(**{verified.OPT_IN: "1"})
    for family, call in gpu_calls().items():
        launched, out = vitfast_kernels(call)
        assert launched, family
        if family in ("quantizers", "scaled_cast"):  # the CPU twin: the same bits
            assert torch.equal(raw(out), raw(refused[family])), family
        step = 0.13 if out.dtype == torch.float8_e4m3fn else 2e-2  # e4m3's codes: one step apart at most
        torch.testing.assert_close(out.float(), refused[family].float(), rtol=step, atol=step)
