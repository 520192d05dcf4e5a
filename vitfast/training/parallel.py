"""How the ranks hold the model: one process, data parallel (DDP: every rank holds all of it), or fully
sharded (FSDP2: each rank 1/N of the weights, gradients and optimizer state). The training loop calls the
same methods on each; what differs (wrapping, clipping, checkpoint files, gathering the weights for
validation and the outputs) is here, so the loop does not branch on it."""
import copy
import os
import shutil

import torch

from ..cli import UsageError
from .state import STATE_FILE, save_state

__all__ = ["create_parallel", "OneProcess", "DataParallel", "FullyShard", "shard", "shard_units"]


def create_parallel(cfg, dist, say):
    if cfg["fsdp"]:
        return FullyShard(cfg, dist, say)
    return DataParallel(cfg, dist, say) if dist.enabled else OneProcess(cfg, dist, say)


class OneProcess:
    """The whole model in this process. Checkpoints are one torch.save file, written by rank 0."""

    suffix = ".pt"

    def __init__(self, cfg, dist, say):
        self.cfg, self.dist, self.say = cfg, dist, say

    def describe(self):
        return ""

    def wrap(self, trained, held=()):
        """The module the loop runs forward and backward (trained, or a wrapper of it); held: the method's
        other modules with weights (an EMA, a teacher), which only FSDP changes (it shards them too)."""
        return trained

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def all_finite(self, params):
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())

    def save(self, path, model, trained, optimizer, rest):
        """rest: the checkpoint's other entries, the method's state among them (method.state())."""
        if self.dist.is_main:
            save_state(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **rest})

    def load(self, state, model, trained, optimizer, method_state):
        """A checkpoint's weights and optimizer state into the modules: its own kind, or a sharded one
        (an FSDP run's, read whole by each process). method_state: the method's state(), called only where
        its entries in `state` are to take its form (filled in from the shards, or cut into shards), for
        method.load_state(state) after."""
        if state.get("sharded"):
            load_sharded(state, model, trained, optimizer, method_state())
            self.say(f"{state['sharded']}: a sharded checkpoint, read whole; this run's checkpoints are "
                     f"checkpoint-*{self.suffix} files (--fsdp shards them again)")
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])

    def remove(self, path):
        if self.dist.is_main and os.path.exists(path):
            os.remove(path)

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
        return torch.nn.parallel.DistributedDataParallel(
            sync_batchnorm(trained, self.dist, self.say), device_ids=[device.index] if device.type == "cuda" else None)


class FullyShard(OneProcess):
    """FSDP2 (torch.distributed.fsdp.fully_shard): each transformer block, then the rest of the model, is
    sharded over every rank; a block's weights are gathered for its forward and backward and freed after.
    Under --amp bf16 the gathered weights are bf16 and gradients reduce in fp32 onto fp32 shards (the
    master weights). Checkpoints are torch.distributed.checkpoint folders (<name>.dcp): every rank writes
    its shards, and the folder is renamed into place once complete, so a checkpoint is whole or absent;
    they load at any number of ranks."""

    suffix = ".dcp"

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

    def all_finite(self, params):
        import torch.distributed as tdist

        local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
        ok = torch.stack([torch.isfinite(p).all() for p in local]).all().to(torch.int32).reshape(1)
        tdist.all_reduce(ok, op=tdist.ReduceOp.MIN)
        return bool(ok.item())

    def save(self, path, model, trained, optimizer, rest):
        import torch.distributed as tdist
        import torch.distributed.checkpoint as dcp

        tmp = path + ".tmp"
        if self.dist.is_main and os.path.exists(tmp):  # a write cut short earlier
            shutil.rmtree(tmp)
        tdist.barrier()
        # the shards in the method's entries (an EMA's, a teacher's, a head's) go with the model's; the rest,
        # whole on every rank (a step count, DINO's centre, SwAV's gathered queues), to state.pt from rank 0
        parts = {k: split_shards(v) for k, v in rest.items()}
        shards = {k: s for k, (s, _) in parts.items() if s is not None}
        dcp.save(dict(sharded_state(model, trained, optimizer), **shards), checkpoint_id=tmp)
        tdist.barrier()  # every rank's shards are written
        if self.dist.is_main:
            whole = {k: w for k, (_, w) in parts.items()}
            save_state(os.path.join(tmp, STATE_FILE), dict(whole, sharded=True, sharded_keys=sorted(shards)))
            replace_folder(tmp, path)
        tdist.barrier()

    def load(self, state, model, trained, optimizer, method_state):
        if state.get("sharded"):
            return load_sharded(state, model, trained, optimizer, method_state())
        # a DDP or one-process run's checkpoint: its whole tensors, sharded here
        self.say(f"a whole checkpoint (.pt), sharded over {self.dist.world_size} rank(s); this run's checkpoints "
                 f"are sharded folders, checkpoint-*{self.suffix}")
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        set_model_state_dict(model, state["model"], options=StateDictOptions(full_state_dict=True))
        set_optimizer_state_dict(trained, optimizer, by_name(state["optimizer"], trained, optimizer),
                                 options=StateDictOptions(full_state_dict=True, strict=False))  # frozen: none
        for key, like in method_state().items():  # the method's whole tensors, cut as its modules' shards are
            if holds_shards(like) and state.get(key) is not None:
                state[key] = shard_like(like, state[key])

    def remove(self, path):
        import torch.distributed as tdist

        if self.dist.is_main and os.path.exists(path):
            shutil.rmtree(path)
        tdist.barrier()

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


def sharded_state(model, trained, optimizer):
    """What a sharded checkpoint holds, as DCP loads it back: the model's and the optimizer's state by name."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(trained, optimizer)}


def load_sharded(state, model, trained, optimizer, method_state):
    """A sharded checkpoint folder (state["sharded"]) into the modules, at whatever number of ranks (or
    none) reads it; the method's entries it holds (state["sharded_keys"]) into `state`, in the form they
    have in method_state (sharded, or whole where this run does not shard)."""
    import torch.distributed as tdist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    target = sharded_state(model, trained, optimizer)
    # torch gives every parameter optimizer state to load into; one the saving run had none for yet (frozen
    # so far: DINO's last layer, SwAV's prototypes) is left without, as a run never stopped has it
    saved = FileSystemReader(state["sharded"]).read_metadata().state_dict_metadata
    moments = target["optimizer"]["state"]
    for name in [n for n, s in moments.items() if not any(f"optimizer.state.{n}.{k}" in saved for k in s)]:
        del moments[name]
    extra = {k: in_shards(method_state[k], state[k]) for k in state.get("sharded_keys", ())}
    dcp.load(dict(target, **extra), checkpoint_id=state["sharded"], no_dist=not tdist.is_initialized())
    set_model_state_dict(model, target["model"])
    set_optimizer_state_dict(trained, optimizer, target["optimizer"], options=StateDictOptions(strict=False))
    for key, loaded in extra.items():
        state[key] = merge_shards(state[key], loaded)


SHARDED = "<in the checkpoint's shards>"  # where a sharded checkpoint's state.pt left a tensor to its shards


def split_shards(value):
    """(the DTensors of a nested dict, None if none; the dict with SHARDED in their places)."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value, SHARDED
    if not isinstance(value, dict):
        return None, value
    parts = {k: split_shards(v) for k, v in value.items()}
    shards = {k: s for k, (s, _) in parts.items() if s is not None}
    return shards or None, {k: w for k, (_, w) in parts.items()}


def in_shards(now, saved):
    """The entries of `now` (a method's state in this run: DTensors, or whole tensors where it does not
    shard) at the places `saved` (a state.pt entry) left to the shards: what DCP loads them into."""
    if is_sharded(saved):
        return now
    if not isinstance(saved, dict):
        return None
    picked = {k: in_shards(now[k], v) for k, v in saved.items()}
    return {k: v for k, v in picked.items() if v is not None} or None


def merge_shards(saved, loaded):
    """saved with its SHARDED places filled from loaded."""
    if is_sharded(saved):
        return loaded
    return {k: merge_shards(v, loaded[k]) if k in loaded else v for k, v in saved.items()}


def is_sharded(value):
    return isinstance(value, str) and value == SHARDED


def holds_shards(value):
    """Whether a checkpoint entry holds a DTensor (a sharded module's state), at any depth."""
    return split_shards(value)[0] is not None


def shard_like(like, whole):
    """whole (nested dicts of tensors) cut into DTensors placed as like's are; what is not a DTensor there
    stays as it is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, dict):
        return {k: shard_like(like[k], v) if k in like else v for k, v in whole.items()}
    if isinstance(like, DTensor):
        return distribute_tensor(whole.to(like.device, like.dtype), like.device_mesh, like.placements)
    return whole


def by_name(saved, trained, optimizer):
    """torch.optim's state dict (parameters numbered in the optimizer's order) keyed by parameter name, as
    torch.distributed.checkpoint.state_dict takes it; the optimizer is built as the saving run built its,
    and its groups are given the keys a method added to the saved ones (DINO's "decayed"), which torch
    requires of them."""
    names = {p: n for n, p in trained.named_parameters()}
    order = [names[p] for group in optimizer.param_groups for p in group["params"]]
    index = [i for group in saved["param_groups"] for i in group["params"]]
    if len(index) != len(order):
        raise ValueError(f"the checkpoint's optimizer holds {len(index)} parameters, this model {len(order)}")
    name_of = dict(zip(index, order))
    for now, then in zip(optimizer.param_groups, saved["param_groups"]):  # keys a method added (DINO's "decayed")
        for key, value in then.items():
            now.setdefault(key, value)
    return {"state": {name_of[i]: s for i, s in saved["state"].items()},
            "param_groups": [dict(g, params=[name_of[i] for i in g["params"]]) for g in saved["param_groups"]]}


def replace_folder(tmp, path):
    """Rename the complete folder tmp to path, replacing what is there: the old one is moved aside first
    (path.old) and removed after, so a crash in between leaves one complete checkpoint (state.settled)."""
    old = path + ".old"
    if os.path.exists(path):  # complete: an older one aside is not needed (without it, old is the one left)
        if os.path.exists(old):
            shutil.rmtree(old)
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

