"""torchrun integration: DDP over NCCL on GPUs, gloo on CPUs; only rank 0 writes."""
import datetime
import os
import re

import torch
import torch.distributed as dist

from .. import progress


class Dist:
    def __init__(self, device_arg=None, timeout=1800.0):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and (device_arg is None or device_arg.startswith("cuda"))
        self.device = torch.device(device_arg if device_arg and device_arg != "cuda" else
                                   (f"cuda:{self.local_rank}" if cuda else "cpu"))
        if self.device.type == "cuda":
            index, count = self.device.index or 0, torch.cuda.device_count()
            if index >= count:
                from ..cli import UsageError

                raise UsageError(f"rank {self.rank} (local rank {self.local_rank}) would train on {self.device}, but this "
                                 f"machine has {count} GPU(s): launch at most {count} process(es) per node "
                                 "(torchrun --nproc-per-node), or train on --device cpu")
            torch.cuda.set_device(self.device)
        self.side_group = None
        if self.world_size > 1:
            backend, timeout = "nccl" if self.device.type == "cuda" else "gloo", datetime.timedelta(seconds=timeout)
            dist.init_process_group(backend, timeout=timeout, **restart_store(self.rank, self.world_size, timeout))
            # host-side agreements (where to stop: interrupt.py) on CPU tensors, with no wait for the GPU
            self.side_group = dist.new_group(backend="gloo")

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def all_reduce_sum(self, tensor):
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def lost_rank(self, error):
        """What a collective's failure says, in a few words, when `error` is one (another rank died, or hung
        past --dist-timeout); None otherwise. The backends' errors reach Python as torch.distributed's
        DistError, or as a RuntimeError through autograd, so their text tells them apart."""
        if not self.enabled or not isinstance(error, RuntimeError):
            return None
        lines = str(error).strip().splitlines()
        text = lines[0] if lines else ""
        if not isinstance(error, dist.DistError) and not re.search(_COLLECTIVE_FAILURES, text):
            return None
        text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # gloo's source location
        return text.split(". This is typically")[0][:200]


def restart_store(rank, world_size, timeout):
    """init_process_group's store for ranks that torchrun restarted (--max-restarts), or {} for env://.
    torchrun keeps its one store across restarts, and the new ranks' process groups would find the
    addresses their predecessors left there (and fail to connect, or hang): a view of it with this
    attempt's keys only."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0" or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                          timeout=timeout)
    return {"store": dist.PrefixStore(f"vitfast/attempt_{attempt}", store), "rank": rank, "world_size": world_size}


_COLLECTIVE_FAILURES = (r"Connection (reset|closed) by peer|Connection refused|[Tt]imed out|ProcessGroupGloo|"
                        r"ProcessGroupNCCL|NCCL error|Broken pipe")


def set_up_process(cfg, dist):
    """This process as the run asks: deterministic algorithms (--deterministic), the seed, and the
    progress output of rank 0 alone."""
    if cfg["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    progress.set_quiet(cfg["quiet"] or not dist.is_main)
    torch.manual_seed(cfg["seed"])
