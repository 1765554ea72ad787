"""Test-time inference (mobilenet/test_time.py) against independent references: a crop followed by
`F.interpolate`, hand-made energy maps, and the model applied by hand."""

import torch
import torch.nn.functional as F

from mobilenet import create_model
from mobilenet.tta import Inference, LookTwice, object_box, sampling_matrix, zoom
from training.config import RunConfig


def test_zoom_is_a_crop_then_bilinear_resize():
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    boxes = [(0, 32, 0, 32), (8, 24, 4, 28), (0, 16, 16, 32)]
    zoomed = zoom(images, torch.tensor(boxes, dtype=torch.float64))
    for image, (top, bottom, left, right), result in zip(images, boxes, zoomed):
        crop = image[None, :, top:bottom, left:right]
        expected = F.interpolate(crop, size=(32, 32), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-12)


def test_the_whole_image_resamples_to_itself():
    weights = sampling_matrix(torch.tensor([0.0]), torch.tensor([7.0]), 7, 7)
    torch.testing.assert_close(weights[0], torch.eye(7))


def test_object_box_covers_the_cells_above_the_mean():
    energy = torch.zeros(2, 7, 7)
    energy[0, 2:4, 1:6] = 5.0  # one block
    energy[1, 0, 0] = energy[1, 6, 3] = 1.0  # two far cells: the box spans both
    box = object_box(energy, 224, 224)
    assert box.tolist() == [[64.0, 128.0, 32.0, 192.0], [0.0, 224.0, 0.0, 128.0]]


def test_test_time_settings_come_from_the_run():
    run = RunConfig(resolution=224, test_scale=1.25, test_hflip=True)
    assert run.inference == Inference(280, hflip=True, look_twice=False)  # FixRes: 224 x 1.25
    assert RunConfig(resolution=160).inference == Inference(160)
    model = create_model("v2", width_mult=0.35, num_classes=5)
    assert Inference(160).wrap(model) is model and Inference(160, look_twice=True, hflip=True).passes == 4


@torch.no_grad()
def test_look_twice_is_the_mean_of_the_image_and_its_zoomed_object_pass():
    torch.manual_seed(0)
    model = create_model("v1", width_mult=0.25, num_classes=6).eval()
    x = torch.randn(2, 3, 96, 96)
    flip = LookTwice(model, hflip=True, look_twice=False)(x)
    torch.testing.assert_close(flip, (model(x) + model(x.flip(-1))) / 2)

    both = LookTwice(model, hflip=False, look_twice=True)(x)
    energy = model.features(x).sum(1)  # (2, 3, 3) at 96 px
    expected = []
    for i in range(2):
        mask = energy[i] >= energy[i].mean()
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        top, bottom = int(rows.min()) * 32, (int(rows.max()) + 1) * 32
        left, right = int(cols.min()) * 32, (int(cols.max()) + 1) * 32
        crop = F.interpolate(x[i : i + 1, :, top:bottom, left:right], size=(96, 96), mode="bilinear")
        expected.append((model(x[i : i + 1]) + model(crop)) / 2)
    torch.testing.assert_close(both, torch.cat(expected), rtol=1e-4, atol=1e-5)
