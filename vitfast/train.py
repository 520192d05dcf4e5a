"""python -m vitfast.train: train any registered model, on a CPU, one GPU or many (torchrun).

With no arguments it trains a small ViT on the built-in dataset and prints the trained model's
post-training-quantized accuracy. Configuration: `-c FILE|NAME` sets defaults, flags override them,
`--set key=value` overrides anything (vitfast/training/config/: a dataclass of options per part). main()
below reads top to bottom: resolve the configuration, plan the run (its folder; what a resumed run continues), build the
data, method, model, parallelism and optimization, restore, open the folder, train, write the outputs.
The parts it drives are each in a file of vitfast/training/ named for it: the loop (loop.py), where the
run is (train_state.py), its checkpoints (checkpointer.py), validation (validator.py) and how a run
ends early (run_guard.py). What the objective changes (views, loss, EMA or teacher, what is validated and
reported) is the method object's (vitfast/training/methods): one loop drives every method.
"""
import os
import sys
from types import SimpleNamespace

import torch

from vitfast import progress
from vitfast.cli import run
from vitfast.training import config as config_lib
from vitfast.training.build import build_model
from vitfast.training.checkpointer import Checkpointer
from vitfast.training.distributed import Dist, set_up_process
from vitfast.training.header import print_header
from vitfast.training.logger import RunLogger
from vitfast.training.loop import Loop
from vitfast.training.losses import NonFiniteWatch
from vitfast.training.methods import create_method
from vitfast.training.optim import Optimization
from vitfast.training.outputs import write_outputs
from vitfast.training.parallel import create_parallel
from vitfast.training.run_data import build_data
from vitfast.training.run_guard import RunGuard
from vitfast.training.run_plan import finished_run, plan_run
from vitfast.training.rundir import open_output
from vitfast.training.schedule import Schedule
from vitfast.training.state import set_rng_state
from vitfast.training.train_state import TrainState
from vitfast.training.validator import Validator


def main(argv=None):
    origin = {}  # where each value came from, for the lines that refuse one
    cfg = config_lib.resolve(sys.argv[1:] if argv is None else list(argv), origins=origin)
    dist = Dist(cfg["device"], cfg["dist_timeout"])
    say = progress.echo if dist.is_main else (lambda *a: None)
    plan = plan_run(cfg, origin, dist)  # its folder is decided and checked now, created once all is built
    if plan.done():
        return finished_run(plan, say, dist)
    cfg, out, device = plan.cfg, plan.out, dist.device
    set_up_process(cfg, dist)

    # ---- data, method, model, how the ranks hold it, and how it is optimized
    parallel, method = create_parallel(cfg, dist, say), create_method(cfg)
    data = build_data(cfg, dist, config_lib.origin_of(origin), method.train_transform)
    schedule = Schedule(cfg, origin, data.steps_per_epoch)
    model = build_model(cfg, data.num_classes, plan.resume, device, say)
    trained = method.prepare(model, SimpleNamespace(  # what the optimizer trains
        num_classes=data.num_classes, img_size=data.img_size, device=device, dist=dist, data=data, say=say,
        total_steps=schedule.total_steps, steps_per_epoch=data.steps_per_epoch))
    # wrapped before the optimizer is made: sharding replaces the parameters (the optimizer takes the shards)
    train_model = parallel.wrap(trained, method.held())
    optimization = Optimization(cfg, trained, device, schedule.lr)
    state = TrainState.from_checkpoint(plan.checkpoint) if plan.resume else TrainState()
    record = config_lib.recorded(cfg)  # as config.yaml, the checkpoints and model.safetensors keep it
    checkpointer = Checkpointer(out, cfg, dist, say, parallel, model, trained, optimization, method, record,
                                schedule.total_steps, state, NonFiniteWatch(device))
    if plan.resume:
        checkpointer.restore(plan.checkpoint, plan.resume)
        if plan.done(schedule.total_steps):  # a checkpoint of an earlier release, without its total
            return finished_run(plan, say, dist, schedule.total_steps)
    elif cfg["resume"] == "auto" and plan.replace is None:
        say(f"--resume auto: no checkpoint in {out} yet; starting a new run")

    # ---- the output folder: everything above could still refuse the run
    created = open_output(out, plan.replace, say) if dist.is_main else False
    log = RunLogger(out, cfg, enabled=dist.is_main, use_wandb=cfg["wandb"])
    plan.record_resume(log, state, schedule.total_steps)
    if dist.is_main:
        config_lib.dump(record, os.path.join(out, "config.yaml"))
    if cfg["compile"]:
        train_model = torch.compile(train_model)
    if plan.resume:
        set_rng_state(plan.checkpoint["rng"])  # last: everything above may have drawn random numbers

    # ---- train, then the outputs
    print_header(log, cfg, origin, model, data, schedule, dist, parallel, out)
    guard = RunGuard(cfg, dist, say, log, plan, created, checkpointer, state, schedule.total_steps, data.micro)
    validator = Validator(cfg, method, data.val_loader, optimization.amp_dtype, dist, parallel, log, checkpointer,
                          state, schedule.total_steps, guard.stop)
    loop = Loop(cfg, data, method, train_model, trained, optimization, schedule, parallel, dist, log, state,
                checkpointer, validator, guard.stop)
    state.begin()
    stopped = guard.train(lambda: loop.run(pending_val=plan.pending_val), validator)
    checkpointer.check_loss()
    summary = guard.write_outputs(lambda: write_outputs(  # summary.json last: it marks the run finished
        cfg, record, out, method, parallel.plain(method.reported), state, stopped, data.val_loader, dist, log))
    for part in (log, parallel, dist):
        part.close()
    return summary


if __name__ == "__main__":
    run("vitfast.train", main)
