"""A sharded checkpoint (an --fsdp run's <name>.dcp folder) as torch.distributed.checkpoint writes and
reads it: the model's and optimizer's state by name, the method's DTensors among the shards and the rest
of the checkpoint whole in state.pt; and the folder put in place whole, or not at all."""
import os
import shutil

__all__ = ["sharded_state", "load_sharded", "split_shards", "merge_shards", "holds_shards", "shard_like", "by_name",
           "replace_folder"]


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
    (path.old) and removed after, so a crash in between leaves one complete checkpoint (settled)."""
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


def settled(path):
    """A checkpoint's path as it is to be read: a sharded checkpoint's folder whose replacement was cut
    between its two renames is complete at path.old (replace_folder)."""
    path = os.fspath(path)
    return path + ".old" if not os.path.exists(path) and os.path.isdir(path + ".old") else path
