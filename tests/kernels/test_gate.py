"""Nothing unverified runs by default (vitfast.kernels.gate, csrc/kernel_gate.h): a kernel family runs on
a kind of GPU (its key: compute capability and SM count) only where a record for that key names this
build's fingerprint, in the package's records or the user's cache, or under VITFAST_UNVERIFIED_KERNELS=1;
elsewhere its ops take the library path (or the ATen composite, or the CPU twin) after one warning naming
`python -m vitfast.check --gpu`. Checked here, without a GPU, through the same C++ choices the CUDA entry
points make (attention_path, gemm_path and fp8_path given a GPU's key; gate.allowed) and the model
backend's dispatch, with record files the tests write."""
import json
import warnings

import pytest
import torch

import vitfast
from vitfast.kernels import dispatch, gate, records

H200, H100 = ("NVIDIA H200", "sm_90x132"), ("NVIDIA H100 80GB HBM3", "sm_90x132")  # one die, one key
H100_PCIE = ("NVIDIA H100 PCIe", "sm_90x114")
A100 = ("NVIDIA A100-SXM4-80GB", "sm_80x108")
GPU, OTHER = H100, A100
STALE = "0123456789abcdef"  # a fingerprint no build has


def write_records(folder, gpu, families, **rows):
    """Records for gpu's key naming this build's fingerprint for each family of `families` (a family ->
    True) or a stale one (-> False), in folder/records; rows: dispatch rows by op for gpu's name,
    measured at this build, in folder/dispatch."""
    built = vitfast.kernel_fingerprints()
    name, key = gpu
    records.write(str(folder / "records"), key,
                  [{"family": f, "fingerprint": built[f] if ok else STALE, "gpu": name, "driver": "test",
                    "torch": torch.__version__, "date": "2026-11-28", "tests": "written by tests/kernels/test_gate.py"}
                   for f, ok in families.items()])
    data = {"gpu": name, "source": {"fingerprints": dict(built)}, "rule": "test", "ops": rows}
    (folder / "dispatch").mkdir(exist_ok=True)
    (folder / "dispatch" / (dispatch.gpu_slug(name) + ".json")).write_text(json.dumps(data))


@pytest.fixture
def records_in(tmp_path, monkeypatch):
    """install() from folders of test records (restoring the package's own afterwards); the opt-in off."""
    monkeypatch.delenv(gate.OPT_IN, raising=False)
    monkeypatch.setattr(dispatch, "DATA_DIR", str(tmp_path / "dispatch"))
    monkeypatch.setattr(dispatch, "_data", {})

    def install(*extra, **env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return gate.install([str(tmp_path / "records"), *map(str, extra)])

    yield tmp_path, install
    monkeypatch.undo()
    gate.install()


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
    return torch.ops.vitfast.attention_path(9, 0, torch.bfloat16, N, d, sm90_built=True, gpu=gpu[1], **kw)


def gemm_path(gpu, **kw):
    return torch.ops.vitfast.gemm_path(9, 0, torch.bfloat16, 50432, 3072, 768, sm90_built=True, gpu=gpu[1], **kw)


def allowed(family, gpu, *args, **kw):
    return gate.allowed(family, gpu[1], *args, **kw)


def test_the_records_name_the_families_whose_fingerprints_match_this_build(records_in):
    folder, install = records_in
    write_records(folder, H200, {"gemm_sm90": True, "gemm_mma": True, "layer_norm": False})
    assert install() == {"sm_90x132": ["gemm_mma", "gemm_sm90"]}
    assert allowed("gemm_sm90", H200, warn=False)
    assert allowed("gemm_sm90", H100, warn=False)  # an H200's record covers an H100 SXM: one key
    assert not allowed("layer_norm", H200, warn=False)  # recorded at another build: stale
    assert not allowed("attention_sm90", H200, warn=False)  # never recorded
    assert not allowed("gemm_sm90", H100_PCIE, warn=False)  # 114 SMs: its own key
    assert not allowed("gemm_sm90", A100, warn=False)  # another architecture: its own records


def test_the_user_cache_and_the_package_s_records_each_grant(records_in, tmp_path):
    """A family runs where either folder has its record at this build (the gate reads both)."""
    folder, install = records_in
    write_records(folder, H100, {"layer_norm": True})
    built = vitfast.kernel_fingerprints()
    records.write(str(tmp_path / "cache"), "sm_90x132",
                  [{"family": "attention_mma", "fingerprint": built["attention_mma"]}])
    assert install(tmp_path / "cache") == {"sm_90x132": ["attention_mma", "layer_norm"]}


def test_a_stale_fingerprint_runs_the_library_path_and_warns_once(records_in, capfd):
    folder, install = records_in
    write_records(folder, GPU, {"attention_sm90": False, "attention_mma": False, "gemm_sm90": False,
                                "gemm_mma": True, "fp8_gemm_sm90": False})
    install()
    refusals(capfd)
    assert attention_path(GPU) == "aten"  # sm90 -> mma.sync -> the ATen composite, each refused
    messages = refusals(capfd)
    assert len(messages) == 1
    message = messages[0]
    assert GPU[1] in message and gate.VERIFY_COMMAND in message and gate.OPT_IN + "=1" in message
    for family in ("attention_sm90", "attention_mma", "gemm_sm90", "fp8_gemm_sm90", "quantizers", "layer_norm_fp8"):
        assert family in message  # every family refused on this kind of GPU, in the one warning
    assert "gemm_mma" not in message
    # the same kind warns once, whatever is refused next, in C++ or in Python
    assert gemm_path(GPU) == "mma_sync"
    assert torch.ops.vitfast.fp8_path(9, 0, 50432, 2304, 768, sm90_built=True, gpu=GPU[1]) == "aten"
    assert caught(allowed, "layer_norm", GPU) == (False, [])
    assert caught(allowed, "layer_norm", H200) == (False, [])  # the same key
    assert refusals(capfd) == []
    # another kind warns for itself; not being a Hopper GPU, it names no sm90 family
    ok, messages = caught(allowed, "quantizers", OTHER, False)
    assert not ok and len(messages) == 1 and OTHER[1] in messages[0] and "_sm90" not in messages[0]


def test_a_matching_fingerprint_runs_ours_without_a_warning(records_in, capfd):
    folder, install = records_in
    write_records(folder, H200, {f: True for f in vitfast.kernel_fingerprints()})
    install()
    assert attention_path(H100) == "sm90"
    assert attention_path(H100, logits=True) == "mma_sync"  # attention_path.h's own choice
    assert gemm_path(H100) == "sm90"
    assert torch.ops.vitfast.fp8_path(9, 0, 50432, 2304, 768, sm90_built=True, gpu=H100[1]) == "sm90"
    assert caught(allowed, "quantizers", H100) == (True, [])
    assert refusals(capfd) == []


def test_the_opt_in_runs_ours_everywhere(records_in, capfd):
    folder, install = records_in
    write_records(folder, GPU, {"attention_sm90": False})
    install(**{gate.OPT_IN: "1"})
    assert attention_path(GPU) == "sm90"
    assert gemm_path(OTHER) == "sm90"
    assert caught(allowed, "layer_norm_fp8", OTHER) == (True, [])
    assert refusals(capfd) == []


def test_without_records_nothing_is_verified(records_in, capfd):
    _, install = records_in
    assert install() == {}
    assert gemm_path(GPU) == "aten" and len(refusals(capfd)) == 1


def test_an_unknown_family_is_an_error_naming_it(records_in):
    with pytest.raises(RuntimeError, match="no kernel family 'gemm_sm100'"):
        allowed("gemm_sm100", GPU)


LN_ROW = dict(D=768, residual=False, grad=False, dtype="bfloat16", ours_ms=0.06, library_ms=0.11,
              library="F.layer_norm", use="vitfast")
GEMM_ROW = dict(K=3072, N=768, grad=False, dtype="bfloat16", ours_ms=0.3, library_ms=0.4, library="F.linear + r",
                use="vitfast", config="coop_128x256_2x1")
LN = dict(D=768, residual=False, grad=False, dtype="bfloat16")
FC2 = dict(K=3072, N=768, grad=False, dtype="bfloat16")


def test_the_backend_takes_ours_only_where_verified_and_measured_at_this_build(records_in):
    folder, install = records_in
    write_records(folder, GPU, {"gemm_sm90": True, "gemm_mma": True, "layer_norm": False},
                  layer_norm=[LN_ROW], linear_residual=[GEMM_ROW])
    install()
    assert dispatch.measured("layer_norm", GPU[0], **LN) == "auto"  # what the data says ...
    choice, messages = caught(dispatch.choice, "layer_norm", *GPU, **LN)
    assert choice is None and len(messages) == 1 and "layer_norm" in messages[0]  # ... but unverified
    assert dispatch.choice("linear_residual", *GPU, **FC2) == "coop_128x256_2x1"

    # measured at another build: the timings describe other kernels, so the library path (verified or not)
    path = folder / "dispatch" / (dispatch.gpu_slug(GPU[0]) + ".json")
    data = json.loads(path.read_text())
    data["source"]["fingerprints"]["gemm_mma"] = STALE
    path.write_text(json.dumps(data))
    dispatch._data.clear()
    install()
    assert dispatch.measured("linear_residual", GPU[0], **FC2) == "coop_128x256_2x1"
    assert dispatch.choice("linear_residual", *GPU, **FC2) is None


def test_rows_of_an_older_build_give_way_to_current_rows_of_the_same_key(records_in, monkeypatch):
    """The user's own rows, timed at an older build, say nothing of this one: the package's rows of
    another GPU of the key, timed at this build, decide (an upgrade keeps our kernels running)."""
    folder, install = records_in
    write_records(folder, H200, {"gemm_sm90": True, "gemm_mma": True}, linear_residual=[GEMM_ROW])
    shipped = folder / "dispatch" / (dispatch.gpu_slug(H200[0]) + ".json")
    shipped.write_text(json.dumps(dict(json.loads(shipped.read_text()), key=H200[1])))
    monkeypatch.setenv("VITFAST_CACHE_DIR", str(folder / "cache"))
    old = {"gpu": GPU[0], "key": GPU[1], "source": {"fingerprints": {"gemm_sm90": STALE, "gemm_mma": STALE}},
           "rule": "test", "ops": {"linear_residual": [dict(GEMM_ROW, config="coop_128x128")]}}
    (folder / "cache" / "dispatch").mkdir(parents=True)
    (folder / "cache" / "dispatch" / (dispatch.gpu_slug(GPU[0]) + ".json")).write_text(json.dumps(old))
    install()
    assert dispatch.measured("linear_residual", GPU[0], GPU[1], **FC2) == "coop_128x128"  # the most trusted says
    assert dispatch.choice("linear_residual", *GPU, **FC2) == "coop_128x256_2x1"  # the current one decides
    assert dispatch.choice("linear_residual", *A100, **FC2) is None  # another key: none of them


def test_the_opt_in_lets_the_backend_take_current_measurements(records_in):
    folder, install = records_in
    write_records(folder, GPU, {}, layer_norm=[LN_ROW])
    install()
    assert caught(dispatch.choice, "layer_norm", *GPU, **LN)[0] is None
    install(**{gate.OPT_IN: "1"})  # a new install: the backend's cached answers are dropped
    assert caught(dispatch.choice, "layer_norm", *GPU, **LN) == ("auto", [])


def test_the_package_s_records_are_at_this_build_or_say_which_build_they_name():
    """The package ships records only for builds a GPU has checked: none names a family this build
    lacks, and each names the GPU, driver and torch it ran on."""
    shipped = records.read(records.SHIPPED_DIR)
    built = vitfast.kernel_fingerprints()
    for key, recs in shipped.items():
        assert all(r["family"] in built and r["gpu"] and r["torch"] for r in recs), key


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
def test_on_the_gpu_a_refused_family_launches_none_of_our_kernels_and_the_opt_in_does(records_in, capfd):
    """Nothing recorded: each op runs its library path / ATen composite / CPU twin (no kernel of ours
    launched; one warning for this GPU kind on stderr); opted in, the same calls launch ours and agree."""
    _, install = records_in
    install()
    refused = {}
    for family, call in gpu_calls().items():
        launched, refused[family] = vitfast_kernels(call)
        assert not launched, (family, launched)
    assert len(refusals(capfd)) == 1
    install(**{gate.OPT_IN: "1"})
    for family, call in gpu_calls().items():
        launched, out = vitfast_kernels(call)
        assert launched, family
        if family in ("quantizers", "scaled_cast"):  # the CPU twin: the same bits
            assert torch.equal(raw(out), raw(refused[family])), family
        step = 0.13 if out.dtype == torch.float8_e4m3fn else 2e-2  # e4m3's codes: one step apart at most
        torch.testing.assert_close(out.float(), refused[family].float(), rtol=step, atol=step)
