"""Importers of other systems' config files into vitfast's options: VISSL's YAML (vissl.py) and myrtle-vision's JSON
(myrtle.py), and what both do with what they ask that vitfast does not do."""
from ...cli import UsageError

__all__ = ["NEEDS", "refuse"]

NEEDS = "__needs__"  # {key: why}: what a file asks that only a flag or --set of that key can replace


def refuse(source, refused):
    """One line for what would make the run another experiment (nothing when `refused` is empty)."""
    if refused:
        raise UsageError(f"{source} asks for what vitfast does not do, so the run would be another experiment: "
                         f"{'; '.join(refused)}")
