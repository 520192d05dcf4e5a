"""Records of families passing their self-tests: keyed by (compute capability, SM count), kept in the
package and in the user's cache, written atomically, a broken file named once and ignored."""
import os
import threading
import warnings

import pytest

from vitfast.kernels import records


def rec(family, fingerprint="0123456789abcdef", **info):
    return {"family": family, "fingerprint": fingerprint, "gpu": "NVIDIA H200", "date": "2026-11-27", **info}


def test_a_key_is_the_architecture_and_the_sm_count():
    assert records.gpu_key(9, 0, 132) == "sm_90x132"  # H100 SXM, H200, H800, GH200's GPU alike
    assert records.gpu_key(9, 0, 114) == "sm_90x114"  # H100 PCIe: another tile walk
    assert records.gpu_key(12, 0, 170) == "sm_120x170"
    with pytest.raises(RuntimeError, match="expected a compute capability and an SM count"):
        records.gpu_key(9, 0, 0)


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VITFAST_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert records.user_dir() == str(tmp_path / "xdg" / "vitfast" / "records")
    monkeypatch.setenv("VITFAST_CACHE_DIR", str(tmp_path / "mine"))
    assert records.user_dir() == str(tmp_path / "mine" / "records")
    monkeypatch.delenv("VITFAST_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert records.user_dir() == str(tmp_path / "home" / ".cache" / "vitfast" / "records")


def test_write_replaces_a_build_s_record_keeps_others_and_reads_back(tmp_path):
    path = records.write(str(tmp_path), "sm_90x132", [rec("gemm_sm90", "aaaa"), rec("layer_norm", "bbbb")])
    assert os.path.basename(path) == "sm_90x132.json"
    records.write(str(tmp_path), "sm_90x132", [rec("gemm_sm90", "aaaa", tests="again"), rec("gemm_sm90", "cccc")])
    got = records.read(str(tmp_path))["sm_90x132"]
    assert sorted((r["family"], r["fingerprint"]) for r in got) == [("gemm_sm90", "aaaa"), ("gemm_sm90", "cccc"),
                                                                    ("layer_norm", "bbbb")]
    assert [r.get("tests") for r in got if r["fingerprint"] == "aaaa"] == ["again"]
    # the package keeps one record per family, the build just checked
    records.write(str(tmp_path), "sm_90x132", [rec("gemm_sm90", "dddd")], keep=1)
    got = records.read(str(tmp_path))["sm_90x132"]
    assert sorted((r["family"], r["fingerprint"]) for r in got) == [("gemm_sm90", "dddd"), ("layer_norm", "bbbb")]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # nothing left half-written


def test_the_user_cache_keeps_a_few_builds_per_family(tmp_path):
    for i in range(records.USER_KEEPS + 3):
        records.write(str(tmp_path), "sm_90x132", [rec("quantizers", f"{i:016x}", date=f"2026-11-{i + 1:02d}")])
    kept = {r["fingerprint"] for r in records.read(str(tmp_path))["sm_90x132"]}
    assert kept == {f"{i:016x}" for i in range(3, records.USER_KEEPS + 3)}  # the newest


def test_writers_at_once_keep_every_record(tmp_path):
    """Two processes checking at once (two ranks, two shells): the lock keeps both writes."""
    threads = [threading.Thread(target=records.write, args=(str(tmp_path), "sm_80x108", [rec(f"family{i}")]))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(records.read(str(tmp_path))["sm_80x108"]) == 8


@pytest.mark.parametrize("text,why", [
    ("{not json", "Expecting property name"),
    ('{"key": "sm_90x132", "records": {}}', 'expected {"key": ..., "records": [...]}'),
    ('{"key": "sm_80x108", "records": []}', "is not its file's name"),
    ('{"key": "sm_90x132", "records": [{"family": "quantizers"}]}', "without a family and a fingerprint"),
])
def test_a_broken_file_is_named_in_one_warning_and_ignored(tmp_path, text, why):
    (tmp_path / "sm_90x132.json").write_text(text)
    records.write(str(tmp_path), "sm_80x108", [rec("quantizers")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = records.read(str(tmp_path))
        again = records.read(str(tmp_path))
    assert got == again and got["sm_90x132"] == [] and len(got["sm_80x108"]) == 1
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(tmp_path / "sm_90x132.json") in message and why in message and "\n" not in message
    assert "python -m vitfast.check --gpu" in message
    # the next check writes it whole again
    records.write(str(tmp_path), "sm_90x132", [rec("layer_norm")])
    assert [r["family"] for r in records.read(str(tmp_path))["sm_90x132"]] == ["layer_norm"]


def test_only_key_named_files_are_records(tmp_path):
    (tmp_path / "notes.json").write_text("[]")
    (tmp_path / "sm_90x132.json.lock").write_text("")
    assert records.read(str(tmp_path)) == {}
    assert records.read(str(tmp_path / "missing")) == {}
    with pytest.raises(ValueError, match="expected a GPU key like 'sm_90x132', got 'NVIDIA H200'"):
        records.write(str(tmp_path), "NVIDIA H200", [])


def test_verified_families_are_those_at_this_build_s_fingerprints(tmp_path):
    records.write(str(tmp_path / "a"), "sm_90x132", [rec("gemm_sm90", "1111"), rec("layer_norm", "2222")])
    records.write(str(tmp_path / "b"), "sm_90x132", [rec("attention_sm90", "3333")])
    records.write(str(tmp_path / "b"), "sm_90x114", [rec("gemm_sm90", "1111")])
    recs = records.merged(str(tmp_path / "a"), str(tmp_path / "b"))
    built = {"gemm_sm90": "1111", "layer_norm": "9999", "attention_sm90": "3333"}
    assert records.verified_families(recs, built) == {"sm_90x132": ["attention_sm90", "gemm_sm90"],
                                                      "sm_90x114": ["gemm_sm90"]}


def test_the_package_ships_records_only_in_their_format():
    for key, recs in records.read(records.SHIPPED_DIR).items():
        assert records.KEY.fullmatch(key)
        for r in recs:
            assert {"family", "fingerprint", "gpu", "driver", "torch", "date", "tests"} <= set(r), r


def test_the_shipped_dispatch_rows_were_timed_on_the_shipped_records_build():
    """Each shipped table of dispatch rows names the fingerprints it timed; where the package also ships
    records for its key, each family a table timed is of the records' build (else its rows would be stale
    on every install that the records let run our kernels), and each op has a table of that key timed on
    it (a table that dropped an op's rows leaves it to another GPU's table of its key)."""
    import json

    from vitfast.kernels import dispatch

    shipped = records.read(records.SHIPPED_DIR)
    tables = [json.load(open(os.path.join(dispatch.DATA_DIR, name))) for name in os.listdir(dispatch.DATA_DIR)]
    assert tables and all("key" in t for t in tables)
    for table in tables:
        timed = table["source"]["fingerprints"]
        for r in shipped.get(table["key"], []):
            if r["family"] in timed:
                assert timed[r["family"]] == r["fingerprint"], (table["gpu"], r["family"])
        spoken_for = {op for op, families in dispatch.OP_FAMILIES.items() if set(families) & set(timed)}
        assert set(table["ops"]) <= spoken_for, table["gpu"]
    for key, recs in shipped.items():
        built = {r["family"]: r["fingerprint"] for r in recs}
        for op, families in dispatch.OP_FAMILIES.items():
            assert any(t["key"] == key and op in t["ops"] and all(t["source"]["fingerprints"].get(f) == built.get(f)
                                                              for f in families if f in t["source"]["fingerprints"])
                       for t in tables), (key, op)
