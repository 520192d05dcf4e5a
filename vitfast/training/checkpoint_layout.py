"""How a run's checkpoints lie on disk: one torch.save file written by rank 0 (checkpoint-*.pt), or, under
--fsdp, a torch.distributed.checkpoint folder every rank writes its shards into (checkpoint-*.dcp). Either
run reads the other's: a sharded checkpoint is read whole by a run that does not shard, and a whole one
sharded by a run that does."""
import os
import shutil

from .sharded_checkpoint import (by_name, holds_shards, load_sharded, replace_folder, shard_like, sharded_state,
                                 split_shards)
from .state import STATE_FILE, save_state

__all__ = ["checkpoint_layout", "WholeFiles", "ShardedFolders"]


def checkpoint_layout(cfg, dist, say):
    return ShardedFolders(dist, say) if cfg["fsdp"] else WholeFiles(dist, say)


class WholeFiles:
    """The whole model, optimizer and method state in one .pt file, written by rank 0 (atomically)."""

    suffix = ".pt"

    def __init__(self, dist, say):
        self.dist, self.say = dist, say

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


class ShardedFolders(WholeFiles):
    """torch.distributed.checkpoint folders (<name>.dcp): every rank writes its shards, and the folder is
    renamed into place once complete, so a checkpoint is whole or absent; they load at any number of
    ranks."""

    suffix = ".dcp"

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
