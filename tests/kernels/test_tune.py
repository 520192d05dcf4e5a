"""This GPU's dispatch rows as `python -m vitfast.check --gpu` measures them (vitfast.kernels.tune), run here
on the CPU as a run of the plumbing (the times mean nothing): the rows in the dispatch data's format,
each choice by the MARGIN rule, the file where the dispatch reads it first, and a failed run named."""
import json
import os
import warnings

import pytest

import vitfast
from vitfast.kernels import check_gpu, dispatch, records, tune


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dispatch")
    lines, why = check_gpu.run_tune(str(folder), ["--device", "cpu", "--batch", "1"])
    assert why == "", why
    return folder, lines, json.loads((folder / "cpu.json").read_text())


def test_the_rows_are_the_dispatch_data_s_and_choose_by_the_margin(tuned):
    _, lines, data = tuned
    assert data["rule"] == tune.RULE and data["source"]["fingerprints"] == vitfast.kernel_fingerprints()
    keys = {"layer_norm": {"D", "residual", "grad"}, "linear_gelu": {"K", "N", "grad"},
            "linear_residual": {"K", "N", "grad"}, "attention": {"H", "N", "d", "bias", "grad"}}
    for op, shape_keys in keys.items():
        rows = data["ops"][op]
        assert rows, op
        for row in rows:
            assert shape_keys | {"dtype", "ours_ms", "library_ms", "library", "use"} <= set(row), (op, row)
            assert row["use"] == ("vitfast" if row["ours_ms"] * dispatch.MARGIN <= row["library_ms"] else "library")
    # fc1, fc2 and proj, each for inference and training; layer_norm's five classes
    assert len(data["ops"]["linear_gelu"]) == 2 and len(data["ops"]["linear_residual"]) == 4
    assert len(data["ops"]["layer_norm"]) == 5 and len(data["ops"]["attention"]) == 4
    assert any(line.startswith("layer_norm      ours on ") for line in lines)


def test_the_dispatch_reads_the_user_s_rows_first(tmp_path, monkeypatch):
    """Rows measured on this machine stand before the package's for the same GPU; a file that cannot be
    read is named once and the package's rows are used."""
    gpu = "NVIDIA H100 80GB HBM3"
    monkeypatch.setenv("VITFAST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dispatch, "_data", {})
    shipped = dispatch.load(gpu)
    assert shipped is not None and shipped["source"] != {"tuned by": "test"}  # the package's
    mine = dict(shipped, source={"tuned by": "test"})
    (tmp_path / "dispatch").mkdir()
    path = tmp_path / "dispatch" / (dispatch.gpu_slug(gpu) + ".json")
    path.write_text(json.dumps(mine))
    dispatch.forget_data()
    assert dispatch.load(gpu)["source"] == {"tuned by": "test"}
    path.write_text("{broken")
    dispatch.forget_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dispatch.load(gpu) == shipped
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    dispatch.forget_data()


def test_a_failed_timing_is_named_in_one_line(tmp_path):
    lines, why = check_gpu.run_tune(str(tmp_path), ["--batch", "many"])
    assert lines == [] and why.startswith("exit status 2: ") and "--batch" in why
    assert not os.listdir(tmp_path)


def test_the_file_is_written_whole(tmp_path):
    path = tune.write({"gpu": "NVIDIA H200", "ops": {}}, str(tmp_path))
    assert os.path.basename(path) == "nvidia_h200.json" and os.listdir(tmp_path) == ["nvidia_h200.json"]
    assert records.cache_dir() == os.environ["VITFAST_CACHE_DIR"]  # the suite's own, not the user's


def test_records_written_elsewhere_are_run_while_timing(tmp_path, monkeypatch):
    """`vitfast.check --gpu --record-into DIR` records into a folder the gate does not read by itself;
    the timing that follows (--records DIR) runs the families recorded there, not the library path."""
    seen = []
    monkeypatch.setattr(tune.gate, "install", lambda folders=None: seen.append(folders))
    monkeypatch.setattr(tune, "tune", lambda *a, **k: {"gpu": "cpu", "ops": {}})
    assert tune.main(["--out-dir", str(tmp_path / "rows"), "--device", "cpu", "--records", str(tmp_path / "recs")]) == 0
    assert seen == [(records.SHIPPED_DIR, records.user_dir(), str(tmp_path / "recs"))]
