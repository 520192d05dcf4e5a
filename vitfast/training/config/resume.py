"""What a resumed run goes on with: the checkpoint's own configuration, with the run-control options the
user gives now; a value that would change what the run trains is refused."""
from ...cli import UsageError
from .files import recorded, upgraded
from .options import options

# What a resumed run may do differently from the run that wrote its checkpoint: where and how it runs and
# reports, not what it trains (every other key is taken from the checkpoint's config).
RUN_CONTROL = ("output", "resume", "overwrite", "device", "workers", "eval_batch_size", "log_every", "save_every",
               "eval_every", "eval_every_steps", "keep_checkpoints", "extend_epochs", "extend_steps", "max_time",
               "ptq_report", "compile", "grad_checkpointing", "download", "strict_data", "fsdp", "fsdp_hybrid",
               "dist_timeout", "wandb", "quiet")


def for_resume(saved, config, origins, path):
    """The configuration a resumed run goes on with: the checkpoint's own (`saved`), with the run-control
    keys the user gave now. A key given now that would change what the run trains (model, data,
    schedule, optimizer, ...) is refused, naming each: the run's config.yaml says what it was."""
    saved, given = upgraded(saved), recorded(config)
    changed = [k for k in origins if k not in RUN_CONTROL and k in saved and saved[k] != given[k]]
    if changed:
        diff = "; ".join(f"{origins[k]} {config[k]!r} (the run has {saved[k]!r})" for k in changed)
        raise UsageError(f"--resume {path}: {diff} would change what the run trains. Resume without "
                         f"{'them' if len(changed) > 1 else 'it'} (the run goes on with its own config.yaml), or "
                         f"start a new run in another --output, from these weights with --init-checkpoint {path}")
    resumed, keys = dict(config), options()
    resumed.update({k: v for k, v in saved.items() if k in keys and k not in origins})
    for key in ("output", "resume", "overwrite", "device"):  # this invocation's, given or not
        resumed[key] = config[key]
    return resumed
