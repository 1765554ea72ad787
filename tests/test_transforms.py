"""Hand-written transforms: output shape and range, hand computations, and seed-driven randomness."""

import pytest
import torch
import torch.nn.functional as F

from data.transforms import ColorJitter, RandomHorizontalFlip, RandomResizedCrop, train_transform
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD
from mobilenet.preprocess import ResizeCenterCrop, eval_transform, resize


def image(h=120, w=160):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8)


def test_train_transform_shape_range_and_seed():
    x = image()
    transform = train_transform(
        96, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=(0.25, 1.0), hflip=0.5, color_jitter=0.4
    )
    torch.manual_seed(3)
    a = transform(x)
    torch.manual_seed(3)
    b = transform(x)
    c = transform(x)
    assert a.shape == (3, 96, 96) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert (a.amin((1, 2)) >= low - 1e-5).all() and (a.amax((1, 2)) <= high + 1e-5).all()


def test_random_resized_crop_respects_scale_and_ratio():
    crop = RandomResizedCrop(32, scale=(0.3, 0.6), ratio=(0.8, 1.25))
    torch.manual_seed(0)
    for _ in range(200):
        top, left, h, w = crop.params(100, 200)
        assert 0.3 * 20000 * 0.95 <= h * w <= 0.6 * 20000 * 1.05
        assert 0.8 * 0.95 <= w / h <= 1.25 * 1.05
        assert 0 <= top <= 100 - h and 0 <= left <= 200 - w
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(32, scale=(0.0, 1.0))


def test_flip_probability_follows_seed():
    x = image(4, 5)
    flip = RandomHorizontalFlip(0.5)
    torch.manual_seed(0)
    flips = [torch.equal(flip(x), x.flip(-1)) for _ in range(400)]
    assert 150 < sum(flips) < 250
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))


def test_eval_transform_is_resize_then_centre_crop():
    x = image(150, 200)
    out = eval_transform(112, mean=(0, 0, 0), std=(1, 1, 1))(x)
    # By hand: shorter side 150 -> 128 (112 / 0.875), width 200 -> 171, centre 112 x 112.
    resized = F.interpolate(x[None].float(), size=(128, 171), mode="bilinear", antialias=True)[0].round().clamp(0, 255)
    top, left = (128 - 112) // 2, (171 - 112) // 2
    torch.testing.assert_close(out, resized[:, top : top + 112, left : left + 112] / 255)
    assert ResizeCenterCrop(112)(x).dtype == torch.uint8


def test_normalization_inception_range():
    x = torch.tensor([0, 255], dtype=torch.uint8).repeat(3, 1, 1)
    out = eval_transform(2, mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=1.0)(x.repeat(1, 2, 1))
    assert out.min().item() == -1.0 and out.max().item() == 1.0


def test_color_jitter_identity_and_bounds():
    x = torch.rand(3, 8, 8)
    torch.testing.assert_close(ColorJitter()(x), x)
    torch.manual_seed(0)
    y = ColorJitter(0.5, 0.5, 0.5)(x)
    assert y.min() >= 0 and y.max() <= 1 and not torch.equal(x, y)
    gray = torch.full((3, 4, 4), 0.5)
    torch.testing.assert_close(ColorJitter(0, 0.9, 0.9)(gray), gray)  # contrast/saturation keep flat gray


def test_resize_keeps_dtype_and_identity():
    x = image(10, 12)
    assert resize(x, (10, 12)) is x
    assert resize(x, (5, 6)).dtype == torch.uint8
