"""The pictures of `evaluate.py`, as PNG files of fixed pixel size (figure inches x DPI).

Each function takes plain data (lists, tensors, uint8 HWC arrays) and a path, and writes one PNG.
"""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

DPI = 100


def _subplots(*args, figsize: tuple[float, float], **kwargs):
    # Figures made without pyplot: no backend is selected and no global figure list is touched, so these
    # functions work the same in scripts, servers and notebooks (where pyplot's inline backend stays).
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _short(name: str, length: int = 22) -> str:
    return name if len(name) <= length else name[: length - 1] + "…"


def _wrapped(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.splitlines()) or text


def plot_confusion(confusion: list[list[int]], class_names: list[str], path, max_labelled: int = 30) -> Path:
    """Row-normalised confusion matrix in class order (CUB's order keeps related species together).

    Above `max_labelled` classes the full matrix is drawn unlabelled and a zoomed panel shows, with names,
    the classes involved in the largest confusions.
    """
    counts = np.asarray(confusion, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    k = len(class_names)
    if k <= max_labelled:
        fig, ax = _subplots(figsize=(10, 9))
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), [_short(n) for n in class_names], rotation=90, fontsize=7)
        ax.set_yticks(range(k), [_short(n) for n in class_names], fontsize=7)
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        int(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
        fig.subplots_adjust(left=0.25, bottom=0.25, right=0.95, top=0.95)
        return _save(fig, path)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    top = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:12], off.shape))[0]
    involved = sorted({int(c) for pair in top for c in pair if off[pair[0], pair[1]] > 0})[:max_labelled] or list(
        range(min(k, 10))
    )
    fig, (left, right) = _subplots(1, 2, figsize=(18, 9), gridspec_kw={"width_ratios": [1, 1.2]})
    left.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    left.set_title(f"all {k} classes (row-normalised)")
    left.set_xlabel("predicted class index")
    left.set_ylabel("true class index")
    zoom = rates[np.ix_(involved, involved)]
    right.imshow(zoom, cmap="Blues", vmin=0, vmax=1)
    names = [_short(class_names[i]) for i in involved]
    right.set_xticks(range(len(involved)), names, rotation=90, fontsize=7)
    right.set_yticks(range(len(involved)), names, fontsize=7)
    right.set_title("zoom: the classes of the largest confusions")
    fig.subplots_adjust(left=0.05, bottom=0.22, right=0.98, top=0.93, wspace=0.35)
    return _save(fig, path)


def plot_per_class_accuracy(per_class: list[dict], path, named: int = 15) -> Path:
    """Sorted per-class accuracy bars, worst first, each named with its test images when there are at most 40
    classes; with more, the `named` worst are named (and drawn in red)."""
    rows = sorted((r for r in per_class if r["count"]), key=lambda r: r["accuracy"])
    every = len(rows) <= 40
    named = len(rows) if every else min(named, len(rows))
    fig, ax = _subplots(figsize=(10, 7))
    accuracies = [r["accuracy"] for r in rows]
    colours = ["tab:blue" if every or i >= named else "tab:red" for i in range(len(rows))]
    ax.barh(range(len(rows)), accuracies, color=colours)
    ax.set_yticks(range(named), [f"{_short(r['class'], 28)} ({r['count']})" for r in rows[:named]], fontsize=8)
    ax.axvline(
        float(np.mean(accuracies)), color="black", linestyle=":", label=f"mean per class ({np.mean(accuracies):.3f})"
    )
    handles, _ = ax.get_legend_handles_labels()
    if not every:
        handles.append(Patch(color="tab:red", label=f"the {named} worst, named"))
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy of the class (its test images in brackets)")
    ax.set_title(f"per-class accuracy, {len(rows)} classes, worst first")
    ax.invert_yaxis()
    fig.subplots_adjust(left=0.3, right=0.97, top=0.93, bottom=0.08)
    return _save(fig, path)


def plot_reliability(bins: list[dict], ece: float, path) -> Path:
    """Accuracy against confidence per bin, with the bin counts below."""
    fig, (ax, counts) = _subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    accuracy = [0 if math.isnan(b["accuracy"]) else b["accuracy"] for b in bins]
    ax.bar(centres, accuracy, width=width * 0.95, color="tab:blue", label="accuracy")
    gap = [0 if math.isnan(b["confidence"]) else b["confidence"] - a for b, a in zip(bins, accuracy)]
    # The gap drawn from the accuracy to the confidence: up (red) where the model is over-confident, down
    # (green) where it is under-confident.
    over = [max(g, 0) for g in gap]
    under = [min(g, 0) for g in gap]
    # Opaque colours: the legend's patches then look exactly like the bars they name.
    ax.bar(
        centres,
        over,
        bottom=accuracy,
        width=width * 0.95,
        color="lightcoral",
        label="over-confident: gap to confidence",
    )
    ax.bar(
        centres,
        under,
        bottom=accuracy,
        width=width * 0.95,
        color="lightgreen",
        label="under-confident: gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    # The title states the measurement, not a verdict: which way the model is off is read from the red and
    # green bars (notebook 05's first exercise asks the reader to predict it).
    ax.set_title(f"reliability diagram ({len(bins)} bins, ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    counts.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="gray")
    counts.set_xlabel("confidence")
    counts.set_ylabel("images")
    fig.subplots_adjust(left=0.14, right=0.96, top=0.93, bottom=0.09, hspace=0.08)
    return _save(fig, path)


def plot_gallery(items: list[dict], path, columns: int = 4, title: str = "misclassified test images") -> Path:
    """Images with a caption each: items have `image` (uint8 HWC) and `caption`."""
    rows = max(1, math.ceil(len(items) / columns))
    fig, axes = _subplots(rows, columns, figsize=(3 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        ax.imshow(item["image"])
        ax.set_title(item["caption"], fontsize=7)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9 if rows > 1 else 0.8, bottom=0.02, hspace=0.35)
    return _save(fig, path)


def plot_confused_pairs(pairs: list[dict], path) -> Path:
    """For each confused pair, one image of the true class beside one of the class it was taken for."""
    rows = max(1, len(pairs))
    fig, axes = _subplots(rows, 2, figsize=(7, 3.2 * rows), squeeze=False)
    for (a, b), pair in zip(axes, pairs):
        for ax, key in ((a, "true"), (b, "predicted")):
            ax.axis("off")
            if pair.get(f"{key}_image") is not None:
                ax.imshow(pair[f"{key}_image"])
            ax.set_title(f"{'true' if key == 'true' else 'taken for'}: {_short(pair[key], 30)}", fontsize=8)
        a.text(1.02, 0.5, f"{pair['count']}x", transform=a.transAxes, fontsize=9, va="center")
    for ax in axes.flat[2 * len(pairs) :]:
        ax.axis("off")
    fig.suptitle("most-confused pairs: one example of each class")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.92 if rows > 1 else 0.82, bottom=0.02, hspace=0.3)
    return _save(fig, path)


def plot_training_curves(
    rows: list[dict], path, lr_per_step: Sequence[float] | None = None, *, title: str | None = None
) -> Path:
    """Loss and top-1 per epoch from a run's metrics.jsonl; the learning rate of every step when
    `lr_per_step` is given (`RunConfig.lr_per_step`: warm-up and decay as the optimizer saw them), with the
    end-of-epoch values the run recorded as dots; `title` names the run (its data and model)."""
    epochs = [r["epoch"] for r in rows]
    fig, (loss, acc, lr) = _subplots(1, 3, figsize=(15, 4.5))
    loss.plot(epochs, [r["train_loss"] for r in rows], marker=".", label="train")
    tested = [r for r in rows if r.get("test_loss") is not None]
    loss.plot([r["epoch"] for r in tested], [r["test_loss"] for r in tested], marker=".", label="test")
    loss.set_title("loss")
    acc.plot(epochs, [r["train_acc"] for r in rows], marker=".", label="train top-1 (random crops, during the epoch)")
    acc.plot([r["epoch"] for r in tested], [r["test_top1"] for r in tested], marker=".", label="test top-1")
    acc.plot([r["epoch"] for r in tested], [r["test_top5"] for r in tested], linestyle="--", label="test top-5")
    validated = [r for r in rows if r.get("val_top1") is not None]
    if validated:
        acc.plot([r["epoch"] for r in validated], [r["val_top1"] for r in validated], marker=".", label="val top-1")
    acc.set_ylim(0, 1.02)
    acc.set_title("accuracy")
    if lr_per_step:
        steps_per_epoch = len(lr_per_step) / max(epochs[-1], 1)
        lr.plot([s / steps_per_epoch for s in range(len(lr_per_step))], lr_per_step, label="every step")
        lr.set_title("learning rate")
    lr.plot(epochs, [r["lr"] for r in rows], "o", markersize=4, label="end of epoch (recorded)")
    if not lr_per_step:
        lr.set_title("learning rate (end of epoch)")
    for ax in (loss, acc, lr):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss.legend()
    acc.legend(loc="lower right", fontsize=8)
    lr.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.84 if title else 0.9, bottom=0.12, wspace=0.25)
    return _save(fig, path)


def plot_gradcam(images: list[np.ndarray], cams: list[np.ndarray], captions: list[str], path, columns: int = 4) -> Path:
    """Each image with its Grad-CAM heat map laid over it."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = _subplots(rows, columns, figsize=(3 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, cam, caption in zip(axes.flat, images, cams, captions):
        ax.imshow(image)
        ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(_wrapped(caption, 30), fontsize=11)
    fig.suptitle("Grad-CAM on the last convolution: where the model looks")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86 if rows > 1 else 0.72, bottom=0.02, hspace=0.4)
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points that no other point beats on both (lower cost and higher accuracy), by cost."""
    front: list[tuple[float, float]] = []
    for cost, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((cost, accuracy))
    return front


def plot_pareto(rows: list[dict], x_key: str, x_label: str, path, *, chance: float | None = None) -> Path:
    """Top-1 against cost (MACs, latency or parameters), each model labelled, with each architecture's Pareto
    front as a step line, on a 0-1 axis (and the chance level when given): the papers' accuracy/cost picture."""
    fig, ax = _subplots(figsize=(8, 6))
    for arch, marker in (("v1", "o"), ("v2", "s")):
        sub = [r for r in rows if r["arch"] == arch]
        if not sub:
            continue
        dots = ax.scatter(
            [r[x_key] for r in sub], [r["top1"] for r in sub], marker=marker, s=60, label=f"MobileNet{arch.upper()}"
        )
        front = pareto_front([(r[x_key], r["top1"]) for r in sub])
        ax.step([c for c, _ in front], [a for _, a in front], where="post", color=dots.get_facecolor()[0], alpha=0.6)
        for k, r in enumerate(sorted(sub, key=lambda r: r["top1"])):  # neighbours alternate above and below
            offset = (6, 6) if k % 2 else (6, -12)
            ax.annotate(r["label"], (r[x_key], r["top1"]), textcoords="offset points", xytext=offset, fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:.0%})")
    ax.set_ylim(0, 1)
    ax.margins(x=0.15)  # room for the labels right of the last points
    ax.set_xlabel(x_label)
    ax.set_ylabel("test top-1")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"accuracy versus {x_label}")
    fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.1)
    return _save(fig, path)


def jpeg_bytes(fig: Figure, *, dpi: int = 72, quality: int = 85) -> bytes:
    """A figure of photographs as JPEG: as PNG, photographs make a notebook megabytes."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    buffer.seek(0)
    return picture_jpeg_bytes(buffer, quality=quality)


def picture_jpeg_bytes(picture, *, width: int | None = None, quality: int = 85) -> bytes:
    """A picture file (a path or a binary file object, e.g. one of `evaluate.py`'s PNGs of photographs) as JPEG,
    shrunk to `width` pixels when it is wider."""
    import io

    from PIL import Image

    image = Image.open(picture).convert("RGB")
    if width is not None and image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
