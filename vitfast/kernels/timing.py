"""How vitfast times the GPU (the tuner of `python -m vitfast.check --gpu` and the benchmark scripts): a
sample is one pair of CUDA events around many calls of the op, enough for the sample to last
`sample_ms`, so neither the launch of one call nor the event's own cost is counted against it. The calls
are replayed from one CUDA graph where the op can be captured; otherwise they are launched back to back
while the GPU waits on a sleep kernel, so the host is ahead of the GPU when the first event is recorded.
The calls rotate over the input sets they are given: input_sets() makes enough to exceed twice the L2
cache, so no call finds its operands in L2 from the previous one. Median and spread (min-max) over >= 10
samples; Timing.method says which of these ran. On the CPU: the host clock, the same loop."""
import dataclasses
import itertools
import math
import statistics
import time

import torch

MIN_SAMPLES = 10
# For a table's header: what measure() does.
METHOD = ("CUDA events around many calls per sample (a CUDA graph replay where the op can be captured, else "
          "launched back to back behind a sleep kernel), samples of >= 2 ms; median and min-max of >= 10 samples")


@dataclasses.dataclass
class Timing:
    median: float  # ms per call
    low: float
    high: float
    calls: int  # calls per sample
    samples: int
    method: str

    def __iter__(self):  # (median, low, high), as the scripts' tables quote it
        return iter((self.median, self.low, self.high))


def l2_bytes(device):
    if not str(device).startswith("cuda"):
        return 0
    return torch.cuda.get_device_properties(torch.device(device)).L2_cache_size


def tensor_bytes(obj):
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(o) for o in obj)
    return 0


def input_sets(make, device, limit=64):
    """Calls of make() (each a tuple of an op's arguments) until their tensors exceed twice the L2 cache:
    rotating over them, each call's inputs were last touched more than an L2's worth of bytes ago."""
    sets = [make()]
    need = 2 * l2_bytes(device)
    each = max(1, tensor_bytes(sets[0]))
    sets += [make() for _ in range(min(limit, max(1, math.ceil(need / each))) - 1)]
    return sets


def _sync(cuda):
    if cuda:
        torch.cuda.synchronize()


def measure(fn, device, inputs=None, repeats=MIN_SAMPLES, warmup=3, sample_ms=2.0, launch="graph"):
    """Milliseconds per call of fn(*inputs[i % len(inputs)]) (fn() without inputs): see the docstring.
    launch: "graph" (captured where the op can be, else as "queued"), "queued" (back to back behind a
    sleep kernel), or "host" for whole models, whose host-side cost per call is part of what a user
    waits for: each sample starts from an idle GPU."""
    if launch not in ("graph", "queued", "host"):
        raise ValueError(f"launch must be 'graph', 'queued' or 'host', got {launch!r}")
    cuda = str(device).startswith("cuda")
    sets = inputs or [()]
    turn = itertools.count()
    call = lambda _: fn(*sets[next(turn) % len(sets)])  # noqa: E731  (the rotation runs on across samples)
    # The fastest timed call fixes how many make up a sample: one call slowed by a busy host would leave
    # too few. The first warm-up call (it may compile or tune) is not timed; the last call always is.
    once_ms = math.inf
    for i in range(warmup + 1):
        t = time.perf_counter()
        call(i)
        _sync(cuda)
        if i or not warmup:
            once_ms = min(once_ms, (time.perf_counter() - t) * 1e3)
    calls = max(len(sets), min(1000, math.ceil(sample_ms / max(once_ms, 1e-3))))  # a graph holds every set
    if cuda:
        sample, how = _graph(call, calls) if launch == "graph" else (None, None)
        if launch == "host":
            sample, how = _launched(call, calls), "launched from an idle GPU, host time included"
        elif sample is None:
            sample, how = _queued(call, calls), "launched back to back behind a sleep kernel"
        times = _events(sample, max(repeats, MIN_SAMPLES), calls)
    else:
        times, how = [], "host clock"
        for _ in range(max(repeats, MIN_SAMPLES)):
            t = time.perf_counter()
            for i in range(calls):
                call(i)
            times.append((time.perf_counter() - t) * 1e3 / calls)
    rotation = f", inputs rotated over {len(sets)} sets" if len(sets) > 1 else ""
    method = (f"{calls} calls per sample ({how}{rotation}), median and min-max of "
              f"{len(times)} samples")
    return Timing(statistics.median(times), min(times), max(times), calls, len(times), method)


def _graph(call, calls):
    """(sample, description): a sample replays `calls` calls captured in one CUDA graph; (None, None)
    when the op cannot be captured."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # what capture needs done first (cuBLAS workspaces, lazy inits)
            call(0)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(calls):
                call(i)
        torch.cuda.synchronize()
    except Exception:  # noqa: BLE001 (any capture failure means: time it launched instead)
        torch.cuda.synchronize()
        return None, None

    def sample(start, end):
        start.record()
        g.replay()
        end.record()
    return sample, "one CUDA graph replayed"


def _queued(call, calls):
    """A sample launches `calls` calls after a sleep kernel that holds the GPU long enough for the host
    to queue them all, so the GPU runs them back to back from the first event on."""
    t = time.perf_counter()
    for i in range(calls):
        call(i)
    host_ms = (time.perf_counter() - t) * 1e3
    torch.cuda.synchronize()
    cycles = int(min(2 * host_ms + 0.1, 100.0) * 2e6)  # at ~2 GHz; the sleep lies before the first event

    def sample(start, end):
        torch.cuda._sleep(cycles)
        start.record()
        for i in range(calls):
            call(i)
        end.record()
    return sample


def _launched(call, calls):
    def sample(start, end):
        start.record()
        for i in range(calls):
            call(i)
        end.record()
    return sample


def _events(sample, samples, calls):
    """Per-call milliseconds of `samples` samples, each between one event pair."""
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        sample(start, end)
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return times
