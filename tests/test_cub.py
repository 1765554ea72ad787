"""The CUB loader on the real CUB images in ../shared and on hand-made broken datasets."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.cub import CUB200, CUBFormatError, ImageDecodeError, readable_class_name
from tests.conftest import CUB20, requires_cub20


@requires_cub20
def test_real_cub20_official_split():
    train, test = CUB200(CUB20, "train"), CUB200(CUB20, "test")
    assert (len(train), len(test)) == (600, 515)
    assert len(train.class_names) == 20 and train.class_names[0] == "Black-footed Albatross"
    assert sorted(set(train.targets)) == list(range(20))
    ids = {s.image_id for s in train.samples} | {s.image_id for s in test.samples}
    assert len(ids) == 1115


@requires_cub20
def test_real_cub20_grayscale_image_comes_out_rgb():
    dataset = (
        CUB200(CUB20, "train")
        if any("Brewer_Blackbird_0028_2682" in str(s.path) for s in CUB200(CUB20, "train").samples)
        else CUB200(CUB20, "test")
    )
    index = next(i for i, s in enumerate(dataset.samples) if "Brewer_Blackbird_0028_2682" in str(s.path))
    with Image.open(dataset.samples[index].path) as raw:
        assert raw.mode == "L"
    image, _ = dataset[index]
    assert image.shape[0] == 3 and bool((image[0] == image[1]).all())


@requires_cub20
def test_real_cub20_bbox_crop_and_subset():
    dataset = CUB200(CUB20, "test", crop="bbox", bbox_margin=0.0, classes=[3, 1])
    assert dataset.class_ids == [1, 3] and set(dataset.targets) == {0, 1}
    assert dataset.class_names == ["Black-footed Albatross", "Sooty Albatross"]
    sample = dataset.samples[0]
    image, _ = dataset[0]
    x, y, w, h = sample.box
    assert abs(image.shape[2] - w) <= 1 and abs(image.shape[1] - h) <= 1
    wide = CUB200(CUB20, "test", crop="bbox", bbox_margin=10.0, classes=[1])[0][0]
    with Image.open(sample.path) as full:
        assert wide.shape[1:] == (full.height, full.width)  # the margin is clipped to the image


def test_readable_class_names():
    assert readable_class_name("001.Black_footed_Albatross") == "Black-footed Albatross"
    assert readable_class_name("036.Northern_Flicker") == "Northern Flicker"
    assert readable_class_name("010.Red_winged_Blackbird") == "Red-winged Blackbird"


def make_cub(root: Path, class_ids=(5, 9), per_class=2, modes=("RGB",)) -> Path:
    """A hand-made CUB folder: classes with the given (non-contiguous) ids, alternating train/test."""
    (root / "images").mkdir(parents=True)
    images, labels, split, boxes, classes = [], [], [], [], []
    image_id = 100
    for c in class_ids:
        folder = f"{c:03d}.Test_bird_{c}"
        classes.append(f"{c} {folder}")
        (root / "images" / folder).mkdir()
        for i in range(per_class):
            image_id += 3  # ids need not be contiguous either
            mode = modes[(image_id // 3) % len(modes)]
            rel = f"{folder}/img_{i}.{'png' if mode in ('P', 'RGBA') else 'jpg'}"
            colour = {"L": 128, "CMYK": (0, 255, 0, 0), "RGBA": (255, 0, 0, 0), "P": 3}.get(mode, (10, 200, 30))
            Image.new(mode, (40, 30), colour).save(root / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {i % 2 == 0:d}")
            boxes.append(f"{image_id} 5.0 4.0 20.0 10.0")
    for name, lines in [
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
        ("classes.txt", classes),
    ]:
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def test_noncontiguous_class_ids_relabelled(tmp_path):
    root = make_cub(tmp_path / "cub", class_ids=(5, 9, 2))
    dataset = CUB200(root, "train")
    assert dataset.class_ids == [5, 9, 2]  # classes.txt order
    assert dataset.targets == [0, 1, 2]
    assert dataset.class_names == ["Test-bird 5", "Test-bird 9", "Test-bird 2"]


def test_every_mode_comes_out_rgb(tmp_path):
    root = make_cub(tmp_path / "cub", class_ids=(1, 2, 3, 4), modes=("L", "CMYK", "P", "RGBA"))
    modes = set()
    for split in ("train", "test"):
        dataset = CUB200(root, split)
        for i, sample in enumerate(dataset.samples):
            with Image.open(sample.path) as raw:
                modes.add(raw.mode)
            image, _ = dataset[i]
            assert image.shape == (3, 30, 40)
    assert modes == {"L", "CMYK", "P", "RGBA"}


@pytest.mark.parametrize(
    "file, edit, message",
    [
        ("classes.txt", None, r"classes.txt: metadata file is missing"),
        ("images.txt", lambda t: t + "103 a/b.jpg\n", r"images.txt:5: duplicate id 103"),
        ("train_test_split.txt", lambda t: t + "200\n", r"train_test_split.txt:5: expected 2 fields"),
        ("train_test_split.txt", lambda t: t + "999 1\n", r"train_test_split.txt: image ids disagree"),
        ("train_test_split.txt", lambda t: t.replace("103 1", "103 yes"), r"train_test_split.txt:1: malformed line"),
        ("image_class_labels.txt", lambda t: t.replace("103 5", "103 five"), r"image_class_labels.txt:1: malformed"),
        ("image_class_labels.txt", lambda t: t.replace("103 5", "103 77"), r"class ids \[77\] not in classes.txt"),
        ("bounding_boxes.txt", lambda t: t.replace("103 5.0", "103"), r"bounding_boxes.txt:1: expected 5 fields"),
    ],
)
def test_metadata_errors_name_file_and_line(tmp_path, file, edit, message):
    root = make_cub(tmp_path / "cub")
    path = root / file
    if edit is None:
        path.unlink()
    else:
        path.write_text(edit(path.read_text()))
    with pytest.raises(CUBFormatError, match=message):
        CUB200(root, "train", crop="bbox")


def test_listed_but_missing_image(tmp_path):
    root = make_cub(tmp_path / "cub")
    victim = CUB200(root, "train").samples[0].path
    victim.unlink()
    with pytest.raises(CUBFormatError, match=f"listed but missing: .*{victim.name}"):
        CUB200(root, "train")


def test_undecodable_image_reported_by_path_or_skipped(tmp_path):
    root = make_cub(tmp_path / "cub", per_class=4)
    dataset = CUB200(root, "train")
    broken = dataset.samples[1].path
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageDecodeError, match=str(broken)):
        dataset[1]
    skipping = CUB200(root, "train", skip_unreadable=True)
    with pytest.warns(UserWarning, match=r"1 unreadable image\(s\) so far"):
        image, label = skipping[1]
    assert label == skipping.samples[2].label and image.shape == (3, 30, 40)


def test_missing_root_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CUB200(tmp_path / "nowhere")
    root = make_cub(tmp_path / "cub")
    with pytest.raises(ValueError, match="split"):
        CUB200(root, "val")
    with pytest.raises(ValueError, match=r"classes \[7\]"):
        CUB200(root, classes=[5, 7])
    shutil.rmtree(root / "images")
    with pytest.raises(CUBFormatError, match="listed but missing"):
        CUB200(root)


def test_pixels_survive_loading(tmp_path):
    root = make_cub(tmp_path / "cub", class_ids=(1,), per_class=2, modes=("RGBA",))
    for split in ("train", "test"):
        image = CUB200(root, split)[0][0]
        assert np.unique(image.numpy()).tolist() == [255]
