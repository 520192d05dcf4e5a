"""How the ranks hold the model: one process, data parallel (DDP: every rank holds all of it), or fully
sharded (FSDP2: each rank 1/N of the weights, gradients and optimizer state). The training loop calls the
same methods on each; what differs (wrapping, clipping, gathering the weights for validation and the
outputs) is here, so the loop does not branch on it. How each writes its checkpoints: checkpoint_layout.py."""
import copy
import os

import torch

from ..cli import UsageError
from .config.run import ParallelOptions

__all__ = ["create_parallel", "OneProcess", "DataParallel", "FullyShard", "shard", "shard_units"]


def create_parallel(cfg, dist, say):
    if ParallelOptions.of(cfg).fsdp:
        return FullyShard(cfg, dist, say)
    return DataParallel(cfg, dist, say) if dist.enabled else OneProcess(cfg, dist, say)


class OneProcess:
    """The whole model in this process."""

    def __init__(self, cfg, dist, say):
        self.cfg, self.dist, self.say = cfg, dist, say

    def describe(self):
        return ""

    def wrap(self, trained, held=()):
        """The module the loop runs forward and backward (trained, or a wrapper of it); held: the method's
        other modules with weights (an EMA, a teacher), which only FSDP changes (it shards them too)."""
        return trained

    def clip_grad_(self, params, max_norm, mode="norm"):
        """Bound the gradients: their whole norm to max_norm (mode "norm", torch's clip_grad_norm_), or
        each parameter's own (mode "param", DINO's clip_gradients: a layer with a large gradient cannot
        shrink the others' steps)."""
        if mode == "norm":
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in params if p.grad is not None]
        if not grads:
            return None
        norms = self.whole_sums(torch.stack([g.float().square().sum() for g in grads])).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [s.to(g.dtype) for s, g in zip(scale.unbind(), grads)])
        return norms

    def whole_sums(self, local):
        """Per-parameter sums over this rank's parts of the gradients -> sums over the whole parameters."""
        return local

    def all_finite(self, params):
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())

    def plain(self, module):
        """The module with all its weights in this process, for validation and the run's outputs."""
        return module

    def close(self):
        pass


class DataParallel(OneProcess):
    """torchrun's ranks each hold the whole model; DDP all-reduces the gradients."""

    def describe(self):
        return " (DDP: each rank holds the whole model)"

    def wrap(self, trained, held=()):
        device = self.dist.device
        for module in held:  # a held module's BatchNorm too (MoCo v3's momentum encoder, as moco-v3 converts it)
            sync_batchnorm(module, self.dist, lambda line: None)
        return torch.nn.parallel.DistributedDataParallel(
            sync_batchnorm(trained, self.dist, self.say), device_ids=[device.index] if device.type == "cuda" else None)


class FullyShard(OneProcess):
    """FSDP2 (torch.distributed.fsdp.fully_shard): each transformer block, then the rest of the model, is
    sharded over every rank; a block's weights are gathered for its forward and backward and freed after.
    Under --amp bf16 the gathered weights are bf16 and gradients reduce in fp32 onto fp32 shards (the
    master weights). Its checkpoints are sharded folders (checkpoint_layout.ShardedFolders)."""

    def __init__(self, cfg, dist, say):
        super().__init__(cfg, dist, say)
        import torch.distributed as tdist

        self.own_group = False
        if not dist.enabled:  # one process: a group of one, so that the same code and files serve
            store = tdist.HashStore()
            backend = "nccl" if dist.device.type == "cuda" else "gloo"
            tdist.init_process_group(backend, store=store, rank=0, world_size=1)
            self.own_group = True
        from torch.distributed.device_mesh import init_device_mesh

        world, self.node = dist.world_size, dist.world_size
        if cfg["fsdp_hybrid"]:  # HSDP: a 2-D mesh, replicas (nodes) x shards (a node's ranks)
            self.node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            if world % self.node:
                raise UsageError(f"--fsdp-hybrid: {world} ranks do not split into nodes of {self.node} "
                                 "(torchrun's LOCAL_WORLD_SIZE): launch the same --nproc-per-node on every node")
            self.mesh = init_device_mesh(dist.device.type, (world // self.node, self.node),
                                         mesh_dim_names=("replicate", "shard"))
        else:
            self.mesh = init_device_mesh(dist.device.type, (world,), mesh_dim_names=("shard",))
        self.skeletons = []  # (module, its weightless copy)

    def describe(self):
        n = self.dist.world_size
        if n == 1:
            return " (--fsdp on one process: nothing to shard; its checkpoints resume on any number of ranks)"
        if self.cfg["fsdp_hybrid"]:
            return (f" (HSDP: each rank holds 1/{self.node} of the weights, gradients and optimizer state, "
                    f"replicated over {n // self.node} node(s))")
        return f" (FSDP: each rank holds 1/{n} of the weights, gradients and optimizer state)"

    def wrap(self, trained, held=()):
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if self.cfg["amp"] == "bf16" else MixedPrecisionPolicy()
        for module in [trained, *held]:
            # a weightless copy: validation and the outputs rebuild the whole module in it from the shards
            self.skeletons.append((module, copy.deepcopy(module).to("meta")))
            shard(sync_batchnorm(module, self.dist, self.say), self.mesh, mp)
            if module is not trained:  # used without gradients: no backward comes to free the root's weights
                module.register_forward_hook(lambda m, args, out: m.reshard())
        return trained

    def whole_sums(self, local):
        import torch.distributed as tdist

        group = (self.mesh["shard"] if self.cfg["fsdp_hybrid"] else self.mesh).get_group()
        tdist.all_reduce(local, group=group)  # replicas of HSDP hold the same shards: summed over one node's
        return local

    def all_finite(self, params):
        import torch.distributed as tdist

        local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
        ok = torch.stack([torch.isfinite(p).all() for p in local]).all().to(torch.int32).reshape(1)
        tdist.all_reduce(ok, op=tdist.ReduceOp.MIN)
        return bool(ok.item())

    def plain(self, module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        whole = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
        twin = copy.deepcopy(self.skeleton(module)).to_empty(device=self.dist.device)
        twin.load_state_dict(whole)
        with torch.no_grad():  # buffers are not sharded; the non-persistent ones are in no state dict
            for (_, mine), (_, theirs) in zip(twin.named_buffers(), module.named_buffers()):
                mine.copy_(theirs)
        return twin

    def skeleton(self, module):
        """The weightless copy of a module that wrap() sharded, or of a module within one (DINO's teacher
        backbone)."""
        for root, skeleton in self.skeletons:
            for name, sub in root.named_modules():
                if sub is module:
                    return skeleton.get_submodule(name)
        raise ValueError(f"{type(module).__name__} is not a module this run sharded")

    def close(self):
        if self.own_group:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def shard(model, mesh, mp_policy=None):
    """fully_shard each of the model's shard_units, then the model itself (what is left), over mesh."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = mp_policy or MixedPrecisionPolicy()
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=mp_policy)
    return fully_shard(model, mesh=mesh, mp_policy=mp_policy)


def shard_units(model):
    """The modules FSDP shards one by one: each transformer block (every child of a `blocks` list, in every
    family: ViT's, T2T's, ConViT's, each DVT exit's), after the parts of it a block names in `shard_apart`
    (called from outside its forward, so gathered on their own: DVT's feature-reuse MLP); the root takes
    what is left."""
    units = []
    for name, module in model.named_modules():
        if name.split(".")[-1] == "blocks" and isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
            for block in module.children():
                units += [getattr(block, n) for n in getattr(block, "shard_apart", ()) if hasattr(block, n)]
                units.append(block)
    return units


def sync_batchnorm(module, dist, say):
    """module with its BatchNorm layers synchronised over the ranks (in place: PyTorch's SyncBatchNorm, on
    GPUs only; on CPUs each rank keeps its own statistics, said once)."""
    if dist.device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if dist.enabled and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        say("note: BatchNorm statistics are each rank's own on the CPU (SyncBatchNorm needs GPUs)")
    return module
