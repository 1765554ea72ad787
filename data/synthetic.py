"""A generated fine-grained bird dataset in the exact CUB-200-2011 layout.

On a machine without CUB, `python train.py` still has a real fine-grained task to learn: bird-like
figures drawn with PIL whose classes share body shape and plumage colours and differ only in a few small
attributes, as real species do:

- crown patch colour (red / yellow / blue / white / black), wing bar (absent / white), eye ring (absent / white),
- and, as further classes need them, bill (short / long), tail (square / forked), breast streaks.

Class k gets the k-th combination, crown colour varying fastest, then wing bar and bill: the default 20
classes are exactly 5 crowns x wing bar x eye ring, so every class has neighbours that differ in one
attribute, and the attributes that do not define a class (bill, tail, streaks) vary from image to image. Every image draws its own pose (facing left or right, tilt),
scale, position, body colour from a palette shared by all classes, lighting and a cluttered background of
branches, leaves and blobs, so that no class is recognisable from raw pixels: a nearest-class-mean
classifier on 16x16 thumbnails stays near chance (tested), while a CNN learns the attributes.

Written under `root/CUB_200_2011/` with `images.txt`, `image_class_labels.txt`, `train_test_split.txt`
(`train_fraction` of each class for training, half by default; the built-in set of
`data.loaders.BUILTIN_SET` uses 70%), `classes.txt`, `bounding_boxes.txt` (the true box of each drawn bird)
and `images/NNN.Name/Name_XXXX.jpg`, so the CUB loader, box crops and the packed cache all serve it.
Deterministic for a seed: each image has its own random stream seeded by (seed, class, index).
"""

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cli import positive_int

CROWN_COLOURS = {
    "Red": (200, 30, 30),
    "Yellow": (235, 200, 30),
    "Blue": (40, 80, 210),
    "White": (240, 240, 240),
    "Black": (25, 25, 25),
}
# Plumage shared by all classes (olive, brown, grey, buff, slate): colour alone never tells the class.
BILL_PALETTE = [(235, 175, 45), (215, 120, 55), (235, 220, 150), (200, 200, 205)]
BODY_PALETTE = [(110, 105, 60), (120, 85, 55), (125, 125, 120), (175, 150, 110), (85, 95, 110)]
ATTRIBUTES = ("crown", "long_bill", "wing_bar", "eye_ring", "forked_tail", "streaked")
SUPERSAMPLE = 2
# Bumped whenever the drawing changes, so that a cached set made by older code is regenerated.
GENERATOR_VERSION = 2


def class_attributes(num_classes: int) -> list[dict]:
    """The class-defining attributes of each class (an attribute that no two classes differ in is left out).

    Combinations are enumerated with the crown colour varying fastest, then wing bar, eye ring, bill, tail and
    streaks: the default 20 classes are the 5 crowns x wing bar x eye ring, and the other attributes vary
    freely from image to image (intra-class variation). More classes bring in bill length, tail and streaks.
    """
    order = ("streaked", "forked_tail", "long_bill", "eye_ring", "wing_bar", "crown")  # last varies fastest
    values = [(False, True)] * 5 + [tuple(CROWN_COLOURS)]
    combos = [dict(zip(order, c)) for c in itertools.product(*values)]
    if not 1 <= num_classes <= len(combos):
        raise ValueError(f"num_classes must be in [1, {len(combos)}], got {num_classes}")
    chosen = combos[:num_classes]
    defining = [a for a in ATTRIBUTES if len({c[a] for c in chosen}) > 1]
    return [{a: c[a] for a in defining} for c in chosen]


def _resolve(attrs: dict, rng: np.random.Generator) -> dict:
    """Fill the attributes that do not define the class with per-image random values."""
    full = dict(attrs)
    for a in ATTRIBUTES:
        if a not in full:
            full[a] = (
                list(CROWN_COLOURS)[rng.integers(len(CROWN_COLOURS))] if a == "crown" else bool(rng.random() < 0.5)
            )
    return full


def class_folder_name(index: int, attrs: dict) -> str:
    parts = [f"{attrs['crown']}_crowned"] if "crown" in attrs else []
    parts += [("Long" if attrs["long_bill"] else "Short") + "_billed"] if "long_bill" in attrs else []
    parts += [("Bar" if attrs["wing_bar"] else "Plain") + "_winged"] if "wing_bar" in attrs else []
    parts += [("Ring" if attrs["eye_ring"] else "Dark") + "_eyed"] if "eye_ring" in attrs else []
    parts += ["Fork_tailed"] if attrs.get("forked_tail") else []
    parts += ["Streaked"] if attrs.get("streaked") else []
    return f"{index + 1:03d}." + "_".join(parts) + "_Finch"


def _jitter_colour(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)
    return r, g, b


# Natural backdrops: foliage greens, bark browns, sky blues and greys, muted so that no crown colour
# is given away by the background, and the same for every class.
BACKGROUND_PALETTE = [
    (70, 110, 60),
    (110, 140, 80),
    (95, 75, 50),
    (140, 120, 90),
    (120, 160, 200),
    (170, 180, 190),
    (60, 80, 70),
]


def _draw_background(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    top = np.array(_jitter_colour(rng, BACKGROUND_PALETTE[rng.integers(len(BACKGROUND_PALETTE))], 30))
    bottom = np.array(_jitter_colour(rng, BACKGROUND_PALETTE[rng.integers(len(BACKGROUND_PALETTE))], 30))
    for y in range(size):
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(v) for v in (1 - t) * top + t * bottom))
    for _ in range(rng.integers(4, 10)):  # leaves and blobs
        x, y = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.03, 0.12, 2) * size
        fill = _jitter_colour(rng, BACKGROUND_PALETTE[rng.integers(len(BACKGROUND_PALETTE))], 40)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)
    for _ in range(rng.integers(2, 6)):  # branches
        x0, y0, x1, y1 = rng.uniform(-0.1, 1.1, 4) * size
        fill = _jitter_colour(rng, (90, 65, 40), 30)
        draw.line([(x0, y0), (x1, y1)], fill=fill, width=int(rng.uniform(0.01, 0.04) * size) + 1)


def _draw_bird(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, attrs: dict) -> tuple[float, ...]:
    """Draw one bird; returns its bounding box (x0, y0, x1, y1) in pixels of the drawing."""
    r = rng.uniform(0.17, 0.21) * size  # body half-length
    facing = 1 if rng.random() < 0.5 else -1
    # The bird spans about -1.75 r (tail) to +2.3 r (long bill tip): centre that span, then jitter, so
    # that the bill, which tells two classes apart, stays inside the frame.
    cx = (0.5 + rng.uniform(-0.06, 0.06)) * size - facing * 0.275 * r
    cy = rng.uniform(0.42, 0.58) * size
    tilt = math.radians(rng.uniform(-15, 15))
    cos_t, sin_t = math.cos(tilt), math.sin(tilt)
    points_drawn: list[tuple[float, float]] = []

    def at(u: float, v: float) -> tuple[float, float]:
        # Bird coordinates (u forward, v down, in body half-lengths) to image pixels.
        x, y = facing * u * r, v * r
        p = (cx + x * cos_t - y * sin_t, cy + x * sin_t + y * cos_t)
        points_drawn.append(p)
        return p

    def ellipse(u: float, v: float, a: float, b: float, n: int = 24) -> list[tuple[float, float]]:
        return [at(u + a * math.cos(2 * math.pi * k / n), v + b * math.sin(2 * math.pi * k / n)) for k in range(n)]

    body = _jitter_colour(rng, BODY_PALETTE[rng.integers(len(BODY_PALETTE))], 20)
    dark = tuple(int(c * 0.7) for c in body)
    belly = tuple(min(255, int(c * 1.35) + 20) for c in body)
    # Legs, tail, body, belly, wing, head.
    for du in (-0.15, 0.15):
        draw.line([at(du, 0.45), at(du - 0.05, 1.0)], fill=(60, 50, 40), width=max(1, int(0.05 * r)))
    if attrs["forked_tail"]:
        tail = [at(-0.8, -0.05), at(-1.75, -0.45), at(-1.35, 0.05), at(-1.75, 0.5), at(-0.8, 0.2)]
    else:
        tail = [at(-0.8, -0.1), at(-1.7, -0.2), at(-1.7, 0.3), at(-0.8, 0.25)]
    draw.polygon(tail, fill=dark)
    draw.polygon(ellipse(0, 0, 1.0, 0.6), fill=body)
    draw.polygon(ellipse(0.1, 0.25, 0.7, 0.33), fill=belly)
    if attrs["streaked"]:
        for du in (-0.2, 0.1, 0.4):
            draw.line([at(du, 0.1), at(du - 0.1, 0.5)], fill=dark, width=max(2, int(0.1 * r)))
    draw.polygon(ellipse(-0.2, -0.1, 0.6, 0.3), fill=dark)
    if attrs["wing_bar"]:
        draw.line([at(-0.4, -0.35), at(-0.05, 0.2)], fill=(245, 245, 235), width=max(3, int(0.25 * r)))
    head_u, head_v, head_r = 0.85, -0.55, 0.5
    bill = 1.1 if attrs["long_bill"] else 0.2  # the long bill reaches a full head length past the face
    # Bill colours are shared by all classes (only the length tells), and light enough to be seen against
    # the dark branches that cross many images.
    bill_colour = _jitter_colour(rng, BILL_PALETTE[rng.integers(len(BILL_PALETTE))], 20)
    draw.polygon(
        [at(head_u + 0.3, head_v - 0.2), at(head_u + 0.35 + bill, head_v + 0.03), at(head_u + 0.3, head_v + 0.2)],
        fill=bill_colour,
    )
    draw.polygon(ellipse(head_u, head_v, head_r, head_r), fill=body)
    crown = _jitter_colour(rng, CROWN_COLOURS[attrs["crown"]], 15)
    draw.polygon(
        [at(head_u + head_r * math.cos(a), head_v - head_r * math.sin(a)) for a in np.linspace(-0.1, 3.3, 16)],
        fill=crown,
    )
    eye_u, eye_v = head_u + 0.15, head_v + 0.1  # just below the crown, so a ring shows on a white crown too
    if attrs["eye_ring"]:
        draw.polygon(ellipse(eye_u, eye_v, 0.24, 0.24, 16), fill=(250, 250, 250))
    draw.polygon(ellipse(eye_u, eye_v, 0.09, 0.09, 10), fill=(10, 10, 10))
    xs, ys = zip(*points_drawn)
    return min(xs), min(ys), max(xs), max(ys)


def draw_image(attrs: dict, image_size: int, rng: np.random.Generator) -> tuple[Image.Image, tuple[float, ...]]:
    """One image of a class with attributes `attrs`; returns the image and the bird's box (x, y, w, h)."""
    size = image_size * SUPERSAMPLE
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    _draw_background(draw, rng, size)
    x0, y0, x1, y1 = _draw_bird(draw, rng, size, attrs)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))).resize(
        (image_size, image_size), Image.Resampling.LANCZOS
    )
    # Lighting: global gain and colour cast, then sensor noise.
    pixels: np.ndarray = np.asarray(img, dtype=np.float32)
    pixels = pixels * rng.uniform(0.75, 1.2) * rng.uniform(0.94, 1.06, 3) + rng.normal(0, 5, pixels.shape)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    s = 1 / SUPERSAMPLE
    x0, y0 = max(0.0, x0 * s), max(0.0, y0 * s)
    x1, y1 = min(float(image_size), x1 * s), min(float(image_size), y1 * s)
    return img, (round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1))


def generate(
    root: str | Path,
    *,
    num_classes: int = 20,
    images_per_class: int = 60,
    image_size: int = 128,
    seed: int = 0,
    train_fraction: float = 0.5,
) -> Path:
    """Write the dataset under `root` and return its CUB root (the folder holding `images.txt`).

    `train_fraction` of each class's images go to the training split, spread evenly over the class.
    """
    num_train = round(images_per_class * train_fraction)
    if not 1 <= num_train < images_per_class:
        raise ValueError(
            f"images_per_class={images_per_class} with train_fraction={train_fraction} must leave at least one "
            "training and one test image per class"
        )
    is_train = [
        math.ceil((i + 1) * num_train / images_per_class) > math.ceil(i * num_train / images_per_class)
        for i in range(images_per_class)
    ]
    out = Path(root) / "CUB_200_2011"
    (out / "images").mkdir(parents=True, exist_ok=True)
    classes, images, labels, split, boxes = [], [], [], [], []
    image_id = 0
    for k, attrs in enumerate(class_attributes(num_classes)):
        folder = class_folder_name(k, attrs)
        classes.append(f"{k + 1} {folder}")
        (out / "images" / folder).mkdir(exist_ok=True)
        for i in range(images_per_class):
            image_id += 1
            rng = np.random.default_rng([seed, k, i])
            img, box = draw_image(_resolve(attrs, rng), image_size, rng)
            rel = f"{folder}/{folder.split('.', 1)[1]}_{i + 1:04d}.jpg"
            img.save(out / "images" / rel, quality=92)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {k + 1}")
            split.append(f"{image_id} {int(is_train[i])}")
            boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
    recipe = dict(
        version=GENERATOR_VERSION,
        num_classes=num_classes,
        images_per_class=images_per_class,
        image_size=image_size,
        seed=seed,
        train_fraction=train_fraction,
    )
    (out / "generator.json").write_text(json.dumps(recipe) + "\n", encoding="utf-8")
    for name, lines in [
        ("classes.txt", classes),
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
    ]:
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the built-in fine-grained bird dataset (CUB layout).")
    parser.add_argument("--out", required=True, help="folder to write into")
    parser.add_argument("--num-classes", type=positive_int, default=20, help="number of classes (default: 20)")
    parser.add_argument("--images-per-class", type=positive_int, default=60, help="images per class (default: 60)")
    parser.add_argument("--image-size", type=positive_int, default=128, help="image side in pixels (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--train-fraction", type=float, default=0.5, help="fraction of each class for training (default: 0.5)"
    )
    args = parser.parse_args(argv)
    print(
        generate(
            args.out,
            num_classes=args.num_classes,
            images_per_class=args.images_per_class,
            image_size=args.image_size,
            seed=args.seed,
            train_fraction=args.train_fraction,
        )
    )


if __name__ == "__main__":
    main()
