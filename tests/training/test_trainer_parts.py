"""The trainer reads as a sequence of parts: `python -m vitfast.train`'s main() is a short list of steps,
and each part it drives is a file of vitfast/training/ short enough to read in one sitting."""
import ast
import inspect
from pathlib import Path

import vitfast.train
import vitfast.training

TRAINING = Path(vitfast.training.__file__).parent


def test_main_is_a_short_sequence():
    lines = inspect.getsource(vitfast.train.main).splitlines()
    assert len(lines) < 60, f"vitfast.train.main is {len(lines)} lines"


def test_each_part_of_the_trainer_is_a_short_file():
    lengths = {p.name: len(p.read_text().splitlines()) for p in TRAINING.rglob("*.py")}
    assert not {name: n for name, n in lengths.items() if n > 300}


def test_the_parts_are_named_for_what_they_hold():
    """Each part main() drives is a class in a file named for it."""
    for module, name in [("loop", "Loop"), ("train_state", "TrainState"), ("checkpointer", "Checkpointer"),
                         ("validator", "Validator"), ("run_guard", "RunGuard"), ("schedule", "Schedule"),
                         ("checkpoint_layout", "WholeFiles"), ("run_plan", "RunPlan")]:
        tree = ast.parse((TRAINING / f"{module}.py").read_text())
        assert name in {n.name for n in tree.body if isinstance(n, ast.ClassDef)}, f"{module}.py has no {name}"
