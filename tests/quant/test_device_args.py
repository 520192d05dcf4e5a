"""A device the caller names (Linear8.path, quantized_paths, load_quantized) that this process cannot
run is refused at the entry, by linear8.usable_device, with one ValueError naming the argument: never
torch's driver error from deep inside ("Found no NVIDIA driver"), never a FileNotFoundError first."""
import pytest
import torch

import vitfast
from vitfast.quant import convert_ptq, load_quantized, quantized_paths, save_quantized
from vitfast.quant.linear8 import usable_device

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An INT8 model (dynamic scales: no calibration) and its save_quantized file."""
    torch.manual_seed(0)
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                 num_heads=2, num_classes=4).eval()
    q = convert_ptq(model, "INT8")
    path = tmp_path_factory.mktemp("q") / "q.safetensors"
    save_quantized(q, path)
    return q, path


def entries(q, path):
    """Each public entry that takes a device, called with `device`."""
    layer = next(m for m in q.modules() if isinstance(m, vitfast.quant.Linear8))
    return {"Linear8.path": lambda device: layer.path(device, torch.bfloat16),
            "quantized_paths": lambda device: quantized_paths(q, device, torch.bfloat16),
            "load_quantized": lambda device: load_quantized(path, device=device)}


ENTRIES = ["Linear8.path", "quantized_paths", "load_quantized"]


@no_gpu
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_a_gpu_is_one_clear_error(saved, entry, device):
    with pytest.raises(ValueError) as e:
        entries(*saved)[entry](device)
    name = str(device)
    assert str(e.value) == (f"device: {name!r} is not usable here (torch.cuda.is_available() is False); "
                            "use 'cpu'")
    assert "driver" not in str(e.value)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", 1.5])
def test_a_bad_device_string_names_the_argument(saved, entry, device):
    with pytest.raises(ValueError, match=r"^device must be 'cpu', 'cuda' or 'cuda:N' \(or a torch.device\), got "):
        entries(*saved)[entry](device)


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_cuda_index_beyond_the_count_is_refused(saved, entry):
    # Refused on any machine: with no GPU as unusable, with GPUs as beyond the count.
    with pytest.raises(ValueError, match=r"^device: 'cuda:\d+'[: ]"):
        entries(*saved)[entry](f"cuda:{torch.cuda.device_count()}")


def test_the_index_message_counts_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert usable_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"^where: 'cuda:2': this machine has 2 cuda device\(s\), numbered from 0$"):
        usable_device("cuda:2", "where")


def test_a_device_type_without_a_backend_is_refused():
    with pytest.raises(ValueError, match=r"^device: 'meta' is not a device vitfast.quant runs on; use 'cpu' or "):
        usable_device("meta")


@no_gpu
def test_the_device_is_checked_before_the_file():
    with pytest.raises(ValueError, match=r"^device: 'cuda' is not usable here"):
        load_quantized("x.safetensors", device="cuda")


@no_gpu
def test_a_model_without_linear8_layers_is_refused_too():
    with pytest.raises(ValueError, match=r"^device: 'cuda' is not usable here"):
        quantized_paths(torch.nn.Linear(4, 4), "cuda")


def test_the_cpu_still_runs(saved):
    q, path = saved
    assert usable_device("cpu") == usable_device(torch.device("cpu")) == torch.device("cpu")
    counts = quantized_paths(q, "cpu")
    assert sum(counts.values()) == sum(isinstance(m, vitfast.quant.Linear8) for m in q.modules()) > 0
    assert set(quantized_paths(load_quantized(path, device=torch.device("cpu")), "cpu")) == set(counts)
