"""Pretrained starting points, and batch-norm re-estimation for weights whose batch norm was folded away.

`load_pretrained(spec, num_classes=K)` accepts:
- a `.tflite` file of Google's (any V1/V2 width and resolution; see `mobilenet.tflite`);
- a torchvision `mobilenet_v2` `.pth` state_dict, or a timm `mobilenetv1_100` `.pth` / `.safetensors`;
- the word `imagenet`: torchvision's official `mobilenet_v2-b0353104.pth`, downloaded through
  `torch.hub.load_state_dict_from_url` with its hash check (offline: an error naming the URL and the local
  path to put the file at);
- the word `inat-birds`: Google's MobileNetV2 1.0/224 trained on the 964 bird species of iNaturalist 2017
  (the Coral / AIY "birds V1" model, Apache-2.0) and its labels, downloaded from google-coral/test_data into
  torch.hub's checkpoints folder with a SHA-256 check (offline: the same one-line error).

Each comes with its card (`mobilenet.card.ModelCard`: resolution, normalization, one plain pass). A `.tflite`
keeps its own head when `num_classes` is None; its output labels (the card's class names) come from
the labels file beside it: the one `*labels*.txt` in its folder with a line per output (the ImageNet files'
`background`, dropped from the head, is dropped from the labels too).

Why `calibrate_batchnorm`: Google's graphs have batch norm folded into each convolution, so the import puts
the folded bias into an identity batch norm (mean 0, var 1). That is exact in eval mode, but in train mode
batch norm normalises by the batch statistics of the conv output, which for these folded kernels are far
from (0, 1): every channel gets rescaled and fine-tuning starts from a network whose train-mode function is
not the pretrained one. Re-estimating each batch norm on real images (running mean/var
= the conv output's statistics, then gamma and beta chosen so that the eval function is unchanged) makes the
batch statistics land near the running ones, and fine-tuning starts from the pretrained function.
"""

import dataclasses
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import nn

from cli import InputError
from mobilenet.card import ModelCard
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD, MobileNetBase
from mobilenet.factory import create_model
from mobilenet.interop import load_timm_mobilenetv1, load_torchvision_mobilenet_v2
from mobilenet.tflite import V2_WIDTHS, load_tflite
from mobilenet.tta import Inference
from mobilenet.v1 import MobileNetV1
from mobilenet.v2 import MobileNetV2

IMAGENET_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
# The bird file's "no bird" operating point: the background probability that keeps 98% of CUB-200's 5,994
# training photos (chosen by `python -m bench.birdid`, bench/studies/birdid/birdid.json; no test photo used).
INAT_BIRDS_GATE_THRESHOLD = 0.003816763637587428


@dataclass(frozen=True)
class Download:
    """A public file and the SHA-256 it must have."""

    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


_CORAL = "https://github.com/google-coral/test_data/raw/master/"
INAT_BIRDS = Download(
    _CORAL + "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
    "350fcd8cf1df1560060d464595dfed8b174b05792788052896004848d9ad04f9",
)
INAT_BIRD_LABELS = Download(
    _CORAL + "inat_bird_labels.txt", "a16108dfe3f8daff015b87a97ab6a17e717b9b1bccd719f6d8f747746d7b9277"
)
NAMED_STARTS = ("imagenet", "inat-birds")


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], num_batches: int = 10) -> int:
    """Re-estimate every BatchNorm2d's running statistics on `batches` without changing the eval function.

    For each batch norm, with a * x + b its current eval-mode affine map and (m, v) the mean and variance of
    its input over the batches: running_mean = m, running_var = v, gamma = a * sqrt(v + eps), beta = b + a * m.
    Returns the number of images used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[nn.Module, list] = {}  # per batch norm: [sum of x, sum of x^2, count] per channel

    def hook(module, inputs, output):
        x = inputs[0].double()
        if module not in sums:
            sums[module] = [0.0, 0.0, 0]
        sums[module][0] += x.sum((0, 2, 3))
        sums[module][1] += (x * x).sum((0, 2, 3))
        sums[module][2] += x.shape[0] * x.shape[2] * x.shape[3]

    handles = [m.register_forward_hook(hook) for m in norms]
    was_training = model.training
    model.eval()  # statistics of the current (pretrained) function
    images = 0
    device = next(model.parameters()).device
    try:
        for i, batch in enumerate(batches):
            if i >= num_batches:
                break
            model(batch.to(device))
            images += batch.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if images == 0:
        raise ValueError("calibrate_batchnorm got no batches")
    for bn in norms:
        total, total_sq, count = sums[bn]
        if bn.running_mean is None or bn.running_var is None:
            continue  # no running statistics to re-estimate
        mean = total / count
        var = (total_sq / count - mean**2).clamp_min(0)
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        shift = bn.bias.double() - scale * bn.running_mean.double()
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(scale * (var + bn.eps).sqrt())
        bn.bias.copy_(shift + scale * mean)
    return images


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        if "Weights only load failed" in first_line:  # torch's advice (load it unsafely) is not given here
            first_line = "it holds Python objects beyond tensors and plain data, refused (read with weights_only=True)"
        raise ValueError(f"{path}: not a readable PyTorch state_dict ({type(e).__name__}: {first_line})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(state).__name__}")
    return state


def from_state_dict(state: dict[str, torch.Tensor], source: str) -> MobileNetBase:
    """Our model from a torchvision `mobilenet_v2` or timm `mobilenetv1_100` state_dict (layout detected)."""
    if "features.0.0.weight" in state and "classifier.1.weight" in state:
        classes = state["classifier.1.weight"].shape[0]
        last_block = state["features.17.conv.2.weight"].shape[0] if "features.17.conv.2.weight" in state else 320
        widths = sorted(V2_WIDTHS, key=lambda w: abs(w - last_block / 320))
        error: Exception | None = None
        for width in widths:
            try:
                v2 = cast(MobileNetV2, create_model("v2", width_mult=width, num_classes=classes))
                return load_torchvision_mobilenet_v2(v2, state)
            except (KeyError, ValueError) as e:
                error = error or e
        raise ValueError(f"{source}: torchvision mobilenet_v2 layout, but no width fits: {error}")
    if "conv_stem.weight" in state and "blocks.0.0.conv_dw.weight" in state:
        classes = state["classifier.weight"].shape[0]
        width = state["conv_stem.weight"].shape[0] / 32
        v1 = cast(MobileNetV1, create_model("v1", width_mult=width, num_classes=classes))
        return load_timm_mobilenetv1(v1, state)
    raise ValueError(
        f"{source}: neither torchvision's mobilenet_v2 layout (features.0.0.weight, classifier.1.weight) "
        f"nor timm's mobilenetv1_100 layout (conv_stem.weight, blocks.0.0.conv_dw.weight)"
    )


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    filename = IMAGENET_URL.rsplit("/", 1)[1]
    local = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        return torch.hub.load_state_dict_from_url(IMAGENET_URL, map_location="cpu", check_hash=True, weights_only=True)
    except OSError as e:  # URLError is an OSError: no network, DNS failure, refused connection
        raise RuntimeError(
            f"could not download {IMAGENET_URL} ({e}); on a machine without internet, put the file at {local}"
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StartUnavailable(InputError, RuntimeError):
    """A named start that cannot be had here: no network, an unwritable hub folder, a wrong checksum."""


def fetch(download: Download) -> Path:
    """The file of `download` in torch.hub's checkpoints folder, downloaded there first if missing; its SHA-256
    is checked either way (a mismatch or no network: a RuntimeError naming the URL and the local path)."""
    local = Path(torch.hub.get_dir()) / "checkpoints" / download.filename
    if not local.is_file():
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StartUnavailable(
                f"cannot make torch.hub's folder {local.parent} ({e.strerror}): set TORCH_HOME to a writable "
                f"folder, or put {download.filename} there"
            ) from None
        try:  # writes to a temporary file and moves it into place: never a partial file at `local`
            torch.hub.download_url_to_file(download.url, str(local), progress=False)
        except OSError as e:  # URLError is an OSError: no network, DNS failure, refused connection
            raise StartUnavailable(
                f"could not download {download.url} ({e}); on a machine without internet, put the file at {local}"
            ) from None
    found = _sha256(local)
    if found != download.sha256:
        raise StartUnavailable(
            f"{local}: SHA-256 {found}, expected {download.sha256} (the file of {download.url}); delete it to "
            "download it again"
        )
    return local


def read_labels(path: Path, outputs: int) -> list[str] | None:
    """The labels in `path` for a head of `outputs` classes: one line per output, or one more when the file
    starts with the `background` that the importer drops; None if the file has another count."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) == outputs:
        return lines
    if len(lines) == outputs + 1 and lines[0].lower() == "background":
        return lines[1:]
    return None


def labels_beside(path: Path, outputs: int) -> list[str] | None:
    """The labels of a `.tflite` file's `outputs` classes from the one `*labels*.txt` beside it that fits."""
    fitting = [labels for f in sorted(path.parent.glob("*labels*.txt")) if (labels := read_labels(f, outputs))]
    return fitting[0] if len(fitting) == 1 else None


def _line_count(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())


def labels_problem(path: Path, outputs: int) -> str:
    """Why `labels_beside` found no labels for a file's `outputs` outputs, naming the files it looked at."""
    files = sorted(path.parent.glob("*labels*.txt"))
    fitting = [f.name for f in files if read_labels(f, outputs)]
    if len(fitting) > 1:
        return f"{len(fitting)} labels files beside it fit its {outputs} outputs ({', '.join(fitting)}): keep one"
    seen = ", ".join(f"{f.name}: {_line_count(f)} lines" for f in files[:4])
    return f"no *labels*.txt beside it has one line per output ({outputs})" + (f"; found {seen}" if seen else "")


def is_bird_start(spec: str | Path) -> bool:
    """Whether `--pretrained spec` is Google's iNaturalist-birds file (by name, or a local copy by SHA-256). A
    file with its name but another SHA-256 (a damaged or edited copy) is a StartUnavailable error: it would
    silently get another recipe."""
    if str(spec) == "inat-birds":
        return True
    path = Path(spec)
    if not (path.suffix == ".tflite" and path.is_file()):
        return False
    same = _sha256(path) == INAT_BIRDS.sha256
    if not same and path.name == INAT_BIRDS.filename:
        raise StartUnavailable(
            f"{path}: named as Google's iNaturalist-birds file but its SHA-256 is not the published one "
            f"({INAT_BIRDS.sha256[:12]}...): a damaged or different copy; fetch it again with --pretrained inat-birds"
        )
    return same


def resolve_start(spec: str | Path) -> Path | None:
    """The local file a `--pretrained` value names (a named start is fetched first), or None for `imagenet`."""
    if str(spec) == "imagenet":
        return None
    if str(spec) == "inat-birds":
        fetch(INAT_BIRD_LABELS)
        return fetch(INAT_BIRDS)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {spec}: no such file (or use one of {', '.join(NAMED_STARTS)})")
    return path


def load_pretrained(spec: str | Path, *, num_classes: int | None = None) -> tuple[MobileNetBase, ModelCard]:
    """A pretrained model from `spec` (see the module docstring) and its card; `num_classes` K gives a fresh
    K-way head (the card then names no classes), None keeps the file's own head (and its labels, as the card's
    class names, where they are known)."""
    path = resolve_start(spec)
    if path is None:
        model, source = from_state_dict(_imagenet_state_dict(), "imagenet"), IMAGENET_URL
    elif path.suffix == ".tflite":
        model, card = load_tflite(path, num_classes=num_classes)
        if num_classes is None and isinstance(model.classifier, nn.Linear):
            labels = labels_beside(path, model.classifier.out_features)
            card = dataclasses.replace(card, class_names=tuple(labels or ()))
            if labels and "background" in labels and is_bird_start(path):
                card = dataclasses.replace(card, gate_threshold=INAT_BIRDS_GATE_THRESHOLD)
        return model, card
    else:
        model, source = from_state_dict(_load_state_dict(path), str(path)), str(path)
    if num_classes is not None:
        model.reset_classifier(num_classes)
    # torchvision's and timm's ImageNet weights: 224 px, ImageNet statistics; their labels are not in the file.
    return model.eval(), ModelCard((), IMAGENET_MEAN, IMAGENET_STD, 224, Inference(224), source=source)


def transplant_head(model: MobileNetBase, source: nn.Linear, rows: list[list[int]]) -> None:
    """Start class k of `model`'s head from the rows `rows[k]` of a pretrained head `source` on the same
    features; a class with no rows keeps its fresh initialisation.

    Several rows (a genus of several species) are averaged and their bias raised by log(n): where the features
    fit all n species alike, the class's logit is then the log of their summed probabilities, as it should be.
    """
    head = cast(nn.Linear, model.classifier)
    if head.in_features != source.in_features or len(rows) != head.out_features:
        raise ValueError(f"a {source.in_features}-feature head cannot start a {tuple(head.weight.shape)} one")
    with torch.no_grad():
        for k, outputs in enumerate(rows):
            if outputs:
                head.weight[k] = source.weight[outputs].mean(0)
                head.bias[k] = source.bias[outputs].mean() + math.log(len(outputs))
