"""hold_out: the last images of each class become the validation split; nothing is lost or shared."""
import pytest
import torch

from vitfast.data import ArrayDataset, hold_out


def dataset(counts, transform=None):
    """Images whose first pixel is their index, classes in blocks of `counts`."""
    targets = [c for c, n in enumerate(counts) for _ in range(n)]
    images = torch.zeros(len(targets), 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(targets), dtype=torch.uint8)
    return ArrayDataset(images, targets, [f"c{i}" for i in range(len(counts))], transform)


def test_the_last_images_of_each_class_are_held_out():
    train, val = hold_out(dataset([5, 5, 5]), dataset([5, 5, 5], transform=lambda x: x + 1), 6)
    assert val.indices == [3, 4, 8, 9, 13, 14] and len(train) == 9
    assert sorted(train.indices + val.indices) == list(range(15))
    assert val.targets == [0, 0, 1, 1, 2, 2] and val.num_classes == 3 and val.classes == ["c0", "c1", "c2"]
    # the validation view's transform applies to the held-out images, the training view's to the rest
    assert int(val[0][0][0, 0, 0]) == 4 and int(train[0][0][0, 0, 0]) == 0


def test_a_remainder_goes_to_the_first_classes():
    _, val = hold_out(dataset([4, 4, 4]), dataset([4, 4, 4]), 5)
    assert [val.targets.count(c) for c in range(3)] == [2, 2, 1]


@pytest.mark.parametrize("n,match", [(0, "holdout must be in"), (12, "holdout must be in"),
                                     (9, "class 'c0' has 2 training images")])
def test_impossible_holdouts_are_refused(n, match):
    with pytest.raises(ValueError, match=match):
        hold_out(dataset([2, 5, 5]), dataset([2, 5, 5]), n)


def test_the_two_views_must_be_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        hold_out(dataset([3, 3]), dataset([3, 2]), 2)
