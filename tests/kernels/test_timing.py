"""vitfast.kernels.timing's measure() (the tuner's and the benchmark scripts'): many calls per sample,
inputs rotated beyond the L2 cache, >= 10 samples; on a GPU a CUDA graph replay where the op can be
captured, else launches queued behind a sleep kernel. The CPU tests check the loop, the rotation and the
arithmetic; the GPU tests the two launch modes."""
import time

import pytest
import torch

from vitfast.kernels import timing


def test_a_sample_holds_enough_calls_to_last_sample_ms():
    t = timing.measure(lambda: time.sleep(0.0005), "cpu", sample_ms=5.0)
    assert t.samples >= timing.MIN_SAMPLES
    assert t.calls >= 5  # ~0.5 ms each, samples of >= 5 ms
    assert 0.45 <= t.low <= t.median <= t.high
    assert t.median < 2.0  # per call, not per sample
    assert "host clock" in t.method and f"{t.calls} calls per sample" in t.method


def test_fewer_repeats_than_the_minimum_still_give_ten_samples():
    assert timing.measure(lambda: None, "cpu", repeats=3).samples == timing.MIN_SAMPLES


def test_the_calls_rotate_over_the_input_sets():
    seen = []
    timing.measure(lambda i: seen.append(i), "cpu", inputs=[(0,), (1,), (2,)], warmup=0, sample_ms=0.0)
    assert set(seen) == {0, 1, 2}
    assert seen[:7] == [0, 1, 2, 0, 1, 2, 0]  # the sizing call, then three calls (one per set) per sample


def test_input_sets_exceed_twice_the_l2_cache(monkeypatch):
    monkeypatch.setattr(timing, "l2_bytes", lambda device: 1000)
    sets = timing.input_sets(lambda: (torch.empty(75, dtype=torch.float32),), "cuda")  # 300 bytes each
    assert len(sets) == 7 and timing.tensor_bytes(sets) == 2100  # the first over 2000 bytes
    assert len({s[0].data_ptr() for s in sets}) == 7
    assert len(timing.input_sets(lambda: (torch.empty(1000),), "cuda")) == 1  # 4000 bytes: one set is enough
    assert len(timing.input_sets(lambda: (torch.empty(1),), "cuda", limit=16)) == 16


def test_no_l2_on_the_cpu_means_one_set():
    assert len(timing.input_sets(lambda: (torch.empty(4),), "cpu")) == 1


def test_the_timing_unpacks_as_median_low_high():
    t = timing.measure(lambda: None, "cpu")
    median, low, high = t
    assert (median, low, high) == (t.median, t.low, t.high)


def test_an_unknown_launch_mode_is_refused():
    with pytest.raises(ValueError, match="launch must be 'graph', 'queued' or 'host'"):
        timing.measure(lambda: None, "cpu", launch="eager")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_a_capturable_op_is_timed_from_a_graph_replay():
    x = torch.randn(4096, 4096, device="cuda")
    t = timing.measure(lambda: x.mul(2.0), "cuda")
    assert "one CUDA graph replayed" in t.method and t.calls > 1
    # 128 MiB read + written: far beyond any launch cost, within 2x of the copy time measured beside it
    copy = timing.measure(lambda: x.clone(), "cuda")
    assert 0.5 < t.median / copy.median < 2.0


@cuda
def test_an_op_that_synchronises_falls_back_to_queued_launches():
    x = torch.randn(1024, device="cuda")
    t = timing.measure(lambda: x.sum().item(), "cuda")
    assert "launched back to back behind a sleep kernel" in t.method
    assert torch.cuda.is_current_stream_capturing() is False


@cuda
def test_a_small_kernel_is_timed_without_its_launch():
    # ~a few microseconds of GPU work: one launch alone costs more on the host; many per sample amortise it
    x = torch.randn(1024, device="cuda")
    graph = timing.measure(lambda: x.add(1.0), "cuda")
    host = timing.measure(lambda: x.add(1.0), "cuda", launch="host", sample_ms=0.0)
    assert graph.median < host.median
