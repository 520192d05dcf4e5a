import pytest


@pytest.fixture
def tiny_args():
    """A model and schedule small enough for CI: trains a step in milliseconds on the built-in data."""
    return ["--model", "vit_tiny_patch16_224", "--data", "builtin",
            "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2",
            "--batch-size", "32", "--log-every", "5", "--ptq-report", ""]

