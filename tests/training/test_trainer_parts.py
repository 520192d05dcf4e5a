"""The trainer reads as a sequence of parts: `python -m vitfast.train`'s main() is a short list of steps,
and each part it drives is a file of vitfast/training/ short enough to read in one sitting."""
import ast
import inspect
from pathlib import Path

import vitfast.train
import vitfast.training

TRAINING = Path(vitfast.training.__file__).parent
STILL_LONG = {"config.py"}  # the flat option table, until each part owns a typed configuration


def test_main_is_a_short_sequence():
    lines = inspect.getsource(vitfast.train.main).splitlines()
    assert len(lines) < 60, f"vitfast.train.main is {len(lines)} lines"


def test_each_part_of_the_trainer_is_a_short_file():
    lengths = {p.name: len(p.read_text().splitlines()) for p in TRAINING.rglob("*.py")}
    long = {name for name, n in lengths.items() if n > 300}
    assert long <= STILL_LONG, {name: lengths[name] for name in long - STILL_LONG}
    assert STILL_LONG <= long, f"{STILL_LONG - long} is short now: take it off STILL_LONG"


def test_the_parts_are_named_for_what_they_hold():
    """Each part main() drives is a class in a file named for it."""
    for module, name in [("loop", "Loop"), ("train_state", "TrainState"), ("checkpointer", "Checkpointer"),
                         ("validator", "Validator"), ("run_guard", "RunGuard"), ("schedule", "Schedule"),
                         ("checkpoint_layout", "WholeFiles"), ("run_plan", "RunPlan")]:
        tree = ast.parse((TRAINING / f"{module}.py").read_text())
        assert name in {n.name for n in tree.body if isinstance(n, ast.ClassDef)}, f"{module}.py has no {name}"
