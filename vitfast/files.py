"""The files vitfast writes, at the bottom of the package (it imports nothing of vitfast's): the user's
cache folder, atomic writes, and the "vitfast." metadata of a .safetensors file, which says what model
it rebuilds and whether it is an 8-bit model (vitfast.quant.save_quantized) rather than weights."""
import json
import os
import secrets

__all__ = ["cache_dir", "atomic_write", "model_recipe", "to_file_metadata", "from_file_metadata", "file_metadata",
           "QUANTIZED_FORMAT", "is_quantized_metadata", "is_quantized_file"]

QUANTIZED_FORMAT = "quantized-model/1"  # vitfast.format of a file save_quantized wrote


def cache_dir():
    """The user's vitfast cache: $VITFAST_CACHE_DIR, else $XDG_CACHE_HOME/vitfast, else ~/.cache/vitfast."""
    if os.environ.get("VITFAST_CACHE_DIR"):
        return os.environ["VITFAST_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vitfast")


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """write(tmp_path), fsync, then rename over path (and fsync the folder): readers see the old file or
    the new one, never half of one, even if the process or the machine dies mid-write."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:  # not mkstemp: its 0600 would stay on the file; this one gets open()'s mode (umask applied)
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(4)}{os.path.basename(path)}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # a writer that made its own file (0600 temp files) gets the run's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def model_recipe(model):
    """{"architecture", "model_kwargs"} of a model made by create_model (None for any other): what
    rebuilds it, stored in a .safetensors file's metadata so the file alone makes the model again."""
    name = getattr(model, "default_cfg", {}).get("architecture")
    kwargs = getattr(model, "create_kwargs", None)
    if name is None or kwargs is None:
        return None
    try:
        return {"architecture": name, "model_kwargs": json.dumps(kwargs)}
    except TypeError:  # an override JSON cannot hold: the weights alone are still a valid file
        return None


def to_file_metadata(fields):
    """fields as a .safetensors file's metadata: every key under the "vitfast." prefix (ours, beside
    whatever other writers put there)."""
    return {f"vitfast.{k}": v for k, v in fields.items()}


def from_file_metadata(meta):
    """The "vitfast." entries of a .safetensors file's metadata (None: none at all), without the prefix."""
    return {k.removeprefix("vitfast."): v for k, v in (meta or {}).items() if k.startswith("vitfast.")}


def file_metadata(path):
    """The "vitfast." entries of a .safetensors file's metadata ({} for a file that is not one)."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), "pt") as f:
            return from_file_metadata(f.metadata())
    except Exception:  # not a safetensors file
        return {}


def is_quantized_metadata(meta):
    """Whether a file's vitfast metadata (from_file_metadata's dict) says save_quantized wrote it."""
    return meta.get("format") == QUANTIZED_FORMAT


def is_quantized_file(path):
    """Whether `path` is a file written by vitfast.quant.save_quantized."""
    return os.path.isfile(path) and is_quantized_metadata(file_metadata(path))
