"""Weights into a model by name, with every difference named: missing keys, unexpected keys and shape
mismatches, in one error (CheckpointMismatchError) or in the result (strict=False)."""
from collections import namedtuple

__all__ = ["LoadResult", "CheckpointMismatchError", "load_state_dict"]

# weights: for a vitfast run's file, whose weights were taken (run_weights' description); None for others
LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys", "mismatched_keys", "weights"],
                        defaults=(None,))


class CheckpointMismatchError(RuntimeError):
    def __init__(self, result, source="checkpoint"):
        self.result = result
        lines = [f"{source} does not match the model:"]
        if result.missing_keys:
            lines.append(f"  missing keys ({len(result.missing_keys)}): {', '.join(result.missing_keys)}")
        if result.unexpected_keys:
            lines.append(f"  unexpected keys ({len(result.unexpected_keys)}): {', '.join(result.unexpected_keys)}")
        for k, got, want in result.mismatched_keys:
            lines.append(f"  shape mismatch for {k}: checkpoint {tuple(got)}, model {tuple(want)}")
        lines.append("pass strict=False to load what matches")
        super().__init__("\n".join(lines))

    def brief(self, limit=3):
        """The mismatch in one line: counts and the first few names of each kind."""
        parts = []
        for label, keys in (("missing", self.result.missing_keys), ("unexpected", self.result.unexpected_keys),
                            ("of another shape", [k for k, _, _ in self.result.mismatched_keys])):
            if keys:
                more = ", ..." if len(keys) > limit else ""
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:limit])}{more})")
        return "; ".join(parts)


def load_state_dict(model, state_dict, strict=True, source="checkpoint"):
    """Load `state_dict` into `model`. strict: any difference raises CheckpointMismatchError naming all
    of them. strict=False loads every key whose name and shape match and returns the rest."""
    own = model.state_dict()
    mismatched = [(k, v.shape, own[k].shape) for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    bad = {k for k, _, _ in mismatched}
    result = LoadResult(missing_keys=sorted(k for k in own if k not in state_dict),
                        unexpected_keys=sorted(k for k in state_dict if k not in own),
                        mismatched_keys=mismatched)
    if strict and (result.missing_keys or result.unexpected_keys or mismatched):
        raise CheckpointMismatchError(result, source)
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own and k not in bad}, strict=False)
    return result
