"""The generated dataset: CUB layout, deterministic, and fine-grained (raw pixels do not separate it)."""

import hashlib

import numpy as np
import torch

from data.cub import CUB200
from data.synthetic import class_attributes, generate


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    a = generate(tmp_path / "a", num_classes=3, images_per_class=4, image_size=48, seed=7)
    b = generate(tmp_path / "b", num_classes=3, images_per_class=4, image_size=48, seed=7)
    c = generate(tmp_path / "c", num_classes=3, images_per_class=4, image_size=48, seed=8)
    assert _digest(a) == _digest(b) != _digest(c)


def test_cub_layout_and_true_boxes(tiny_synthetic_root):
    train, test = CUB200(tiny_synthetic_root, "train"), CUB200(tiny_synthetic_root, "test")
    assert len(train) == len(test) == 12 and len(train.class_names) == 4
    # Four classes differ only in crown colour; the other attributes vary within each class.
    assert train.class_names == [
        "Red-crowned Finch",
        "Yellow-crowned Finch",
        "Blue-crowned Finch",
        "White-crowned Finch",
    ]
    for sample in train.samples + test.samples:
        x, y, w, h = sample.box
        assert 0 <= x and 0 <= y and x + w <= 64.01 and y + h <= 64.01 and w > 10 and h > 10
    crop = CUB200(tiny_synthetic_root, "train", crop="bbox", bbox_margin=0)[0][0]
    assert crop.shape[1] < 64 and crop.shape[2] < 64


def test_the_20_classes_are_crown_by_wing_bar_by_eye_ring_and_each_has_six_one_attribute_look_alikes():
    """The docstring's design: 5 crowns x wing bar x eye ring. So every class differs from exactly 6 others in
    one attribute only (4 other crowns, the wing bar, the eye ring): fine-grained for every class, not one pair."""
    attrs = class_attributes(20)
    assert sorted(attrs[0]) == ["crown", "eye_ring", "wing_bar"] and len({tuple(a.values()) for a in attrs}) == 20
    for a in attrs:
        neighbours = [b for b in attrs if sum(a[k] != b[k] for k in a) == 1]
        assert len(neighbours) == 6, (a, neighbours)


def test_nearest_class_mean_on_thumbnails_is_near_chance(synthetic_root):
    # Fine-grained by construction: a nearest-class-mean classifier on 16x16 pixels stays below 35%.
    def thumbnails(split):
        dataset = CUB200(synthetic_root, split)
        images = torch.stack([dataset[i][0].float() for i in range(len(dataset))])
        small = torch.nn.functional.interpolate(images, size=(16, 16), mode="area").flatten(1)
        return small.numpy(), np.array(dataset.targets)

    x_train, y_train = thumbnails("train")
    x_test, y_test = thumbnails("test")
    assert len(x_train) == len(x_test) == 600
    means = np.stack([x_train[y_train == k].mean(0) for k in range(20)])
    predictions = ((x_test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = (predictions == y_test).mean()
    print(f"nearest-class-mean accuracy on 16x16 thumbnails: {accuracy:.3f}")
    assert accuracy < 0.35
