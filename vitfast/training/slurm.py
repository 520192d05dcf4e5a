"""SLURM's time limit, met as Lightning meets it (its SLURMEnvironment's auto-requeue): a batch job started
with `#SBATCH --signal=USR1@SECONDS` gets SIGUSR1 that long before its end; the run finishes its step and
saves (interrupt.py) and, once every rank has, queues the job again with `scontrol requeue`. The requeued
job runs the same script, whose `--resume auto` continues the run. A preemption needs none of this: SLURM
sends SIGTERM, the run saves the same way, and `#SBATCH --requeue` has SLURM queue the job again itself."""
import os
import signal
import subprocess

from ..cli import one_line

__all__ = ["REQUEUE_SIGNAL", "requeue"]

REQUEUE_SIGNAL = signal.SIGUSR1


def requeue(signum, again):
    """After a stop by `signum`, saved by every rank: in a SLURM batch job stopped by REQUEUE_SIGNAL, the job
    queued again, and the line that says so (or why not, and `again`: the command that continues); None
    elsewhere (an interactive allocation, salloc's shell, is never requeued)."""
    job = os.environ.get("SLURM_JOB_ID")
    if signum != REQUEUE_SIGNAL or not job or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        error = None if done.returncode == 0 else one_line(done.stderr) if done.stderr.strip() else \
            f"exit status {done.returncode}"
    except FileNotFoundError:
        error = "no scontrol on this machine's PATH"
    except (OSError, subprocess.TimeoutExpired) as e:
        error = one_line(e)
    if error:
        return (f"SLURM job {job} is not requeued (scontrol requeue {job}: {error}); requeue it, or continue with: "
                f"{again}")
    return f"SLURM job {job} requeued (scontrol requeue {job}): its script's --resume auto continues the run"
