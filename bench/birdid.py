"""Bird ID as a field guide answers: the "is there a bird?" gate and the answer at the level the model is sure of,
measured on the full CUB-200-2011 and Caltech-101 (issue #36).

    python -m bench.birdid --data-root DIR/CUB_200_2011 --caltech ../shared/data/caltech101 --weights FILE

One pass of Google's iNaturalist-birds V2 over every photo gives both models' outputs: the bird file's own 965
(its last, "background", is the gate's score) and, through the same frozen pooled features, the linear probe's
200 (the README's recommended full-set model: the bird file with a probe head). Chosen without the test split:
- the gate's threshold: the background probability that keeps 98% of the 5,994 CUB training photos;
- the fallback's threshold: on the rule's validation sixth (1,000 photos; a probe fitted on the other 4,994), the
  smallest confidence at which answers are right at their level at least `TARGET_RIGHT` of the time.
Then the test split (5,794), Caltech's 298 bird photos and its non-bird photos (none used for choosing) report
them, with the probe refitted on all 5,994 training photos, as `python train.py --probe-head --epochs 0` does.
Writes `OUT/birdid.json` and `OUT/birdid.md`.

`--imagenet FILE` (an ImageNet classifier, e.g. Google's V1 0.5/160; repeatable) adds the gate candidates a
second network would give, and its latency beside the bird file: its summed probability of ImageNet's bird
classes, alone and added to the bird file's (as log-odds), each at two operating points: 98% of the CUB training photos kept, and 1% of held-out non-bird classes let
through (two folds of Caltech's non-bird classes: each fold's threshold is reported on the other fold).
"""

import argparse
import json
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from atomicfile import write_atomically
from cli import InputError, run
from data.cub import CUB200, load_rgb, pil_to_tensor
from data.species_map import output_rows
from data.taxonomy import taxa_of
from deploy.answer import LEVELS, answer_levels, choose_threshold, group_levels
from deploy.images import find_images
from evaluation.metrics import auroc
from evaluation.timing import interleaved
from mobilenet import optimize_for_inference
from mobilenet.gate import IMAGENET_BIRDS
from mobilenet.pretrained import load_pretrained
from training.probe import fit_probe

BIRDS_KEPT = 0.98  # the gate's operating point: the share of bird photos it must keep
NON_BIRDS_THROUGH = 0.01  # the other operating point the candidates report: held-out non-birds let through
TARGET_RIGHT = 0.97  # the fallback's: answers right at their level
VAL_FRACTION, SEED = 0.1667, 0  # the full-set rule's validation sixth (bench/studies/cub200/RULE.md)


class Photos(torch.utils.data.Dataset):
    """Image files under the card's test-time view, labelled by their folder (a Caltech class)."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(pil_to_tensor(load_rgb(self.paths[i]))), i


def photo_sets(data_root: str, caltech: Path, view) -> dict[str, torch.utils.data.Dataset]:
    """The four photo sets every score is computed on, in this order, under `view`."""
    return {
        "cub_train": CUB200(data_root, "train", view),
        "cub_test": CUB200(data_root, "test", view),
        "caltech_birds": Photos(find_images([caltech / "birds"])[0], view),
        "caltech_non_birds": Photos(find_images([caltech / "non-birds"])[0], view),
    }


@torch.no_grad()
def features_and_logits(model, dataset, *, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, 1280) and the bird file's logits (N, 965) of every image."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=workers)
    pooled, logits = [], []
    for images, _ in loader:
        features = model.pool(model.forward_features(images.contiguous(memory_format=torch.channels_last)))
        pooled.append(features.flatten(1))
        logits.append(model.classifier(pooled[-1]))
    return torch.cat(pooled), torch.cat(logits)


def imagenet_no_bird(file: str, data_root: str, caltech: Path, cache: Path, *, workers: int) -> dict[str, np.ndarray]:
    """1 - the summed probability of ImageNet's bird classes (`IMAGENET_BIRDS`) under an ImageNet classifier, for
    the four `photo_sets`, each photo under the classifier's own test view; its logits are kept
    beside `cache`."""
    kept = cache.with_name(f"imagenet_{Path(file).name}.pt")
    if kept.is_file():
        logits = torch.load(kept, weights_only=True)
    else:
        model, card = load_pretrained(file)
        if len(card.class_names) != 1000:
            raise InputError(f"--imagenet {file}: not an ImageNet-1k classifier ({len(card.class_names)} outputs)")
        model = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        sets = photo_sets(data_root, caltech, card.transform())
        with torch.no_grad():
            logits = {
                name: torch.cat(
                    [model(x) for x, _ in torch.utils.data.DataLoader(photos, batch_size=64, num_workers=workers)]
                )
                for name, photos in sets.items()
            }
        write_atomically(kept, lambda f: torch.save(logits, f))
    return {name: 1 - v.softmax(1)[:, list(IMAGENET_BIRDS)].sum(1).numpy() for name, v in logits.items()}


def second_network_latency(model: torch.nn.Module, file: str, resolution: int) -> dict:
    """Batch-1 latency of `model` alone and with the ImageNet classifier `file` beside it (on the photo resized
    to the classifier's resolution), interleaved, both on the serving fast path (BN folded, channels_last)."""
    second, card = load_pretrained(file)
    plain = optimize_for_inference(model.eval(), channels_last=True)
    beside = optimize_for_inference(second.eval(), channels_last=True)
    size = card.inference.resolution
    x = torch.randn(1, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)

    def both() -> None:
        plain(x)
        beside(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True))

    with torch.inference_mode():
        t = interleaved({"plain": lambda: plain(x), "both": both}, rounds=15, warmup=3)
    return {
        "plain_ms": 1000 * t["plain"].median,
        "with_second_network_ms": 1000 * t["both"].median,
        "ratio": t["both"].median / t["plain"].median,
        "spread": [t["plain"].spread, t["both"].spread],
    }


def gate_report(background: dict[str, np.ndarray], threshold: float, caltech_classes: list[str]) -> dict:
    """Birds kept and non-birds let through at `threshold` (a photo is a bird when its background probability
    is below it), AUROC, and the non-bird classes let through most."""
    birds = np.concatenate([background["cub_test"], background["caltech_birds"]])
    non_birds = background["caltech_non_birds"]
    passed = non_birds < threshold
    by_class: dict[str, list[bool]] = {}
    for name, through in zip(caltech_classes, passed):
        by_class.setdefault(name, []).append(bool(through))
    worst = sorted(((np.mean(v), len(v), k) for k, v in by_class.items()), reverse=True)[:8]
    at_98 = float(np.quantile(birds, BIRDS_KEPT))  # the ROC point the issue names: 98% of these birds kept
    return {
        "threshold": float(threshold),
        "auroc": auroc(-birds, -non_birds),  # a bird scores higher: the negated background probability
        "non_birds_as_bird_at_98_of_birds": float((non_birds < at_98).mean()),
        "non_birds_as_bird_at_98_of_cub_test": float(
            (non_birds < np.quantile(background["cub_test"], BIRDS_KEPT)).mean()
        ),
        "cub_test_kept": float((background["cub_test"] < threshold).mean()),
        "caltech_birds_kept": float((background["caltech_birds"] < threshold).mean()),
        "birds_kept": float((birds < threshold).mean()),
        "non_birds_answered_as_bird": float(passed.mean()),
        "non_birds": int(len(non_birds)),
        "birds": int(len(birds)),
        "worst_non_bird_classes": [{"class": k, "answered_as_bird": float(m), "photos": n} for m, n, k in worst],
    }


def log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def gate_candidate(no_bird: dict[str, np.ndarray], caltech_classes: list[str]) -> dict:
    """One candidate score (higher: less likely a bird) at both operating points, and its ROC point at 98% of
    the bird photos kept. The non-bird threshold is cross-fitted: Caltech's non-bird classes in two folds
    (alternate classes by name), each fold's 1% quantile reported on the other fold."""
    birds = np.concatenate([no_bird["cub_test"], no_bird["caltech_birds"]])
    non_birds = no_bird["caltech_non_birds"]
    on_train = float(np.quantile(no_bird["cub_train"], BIRDS_KEPT))
    fold_of = {name: i % 2 for i, name in enumerate(sorted(set(caltech_classes)))}
    fold = np.array([fold_of[name] for name in caltech_classes])
    kept, through = [], []
    for f in (0, 1):
        threshold = np.quantile(non_birds[fold == f], NON_BIRDS_THROUGH)
        kept.append(float((birds < threshold).mean()))
        through.append(float((non_birds[fold != f] < threshold).mean()))
    return {
        "auroc": auroc(-birds, -non_birds),
        "non_birds_as_bird_at_98_of_birds": float((non_birds < np.quantile(birds, BIRDS_KEPT)).mean()),
        "keep_98_of_training_birds": {
            "birds_kept": float((birds < on_train).mean()),
            "caltech_birds_kept": float((no_bird["caltech_birds"] < on_train).mean()),
            "non_birds_answered_as_bird": float((non_birds < on_train).mean()),
        },
        "one_percent_of_held_out_non_birds": {"birds_kept": kept, "non_birds_answered_as_bird": through},
    }


def risk_coverage(probabilities: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """For each species confidence threshold: the share answered at species level and the error among them."""
    confidence, predicted = probabilities.max(1)
    order = confidence.argsort(descending=True)
    right = (predicted == labels)[order].double()
    answered = torch.arange(1, len(right) + 1, dtype=torch.float64)
    error = 1 - right.cumsum(0) / answered
    picks = np.unique(np.linspace(0, len(right) - 1, 41).round().astype(int))
    return [
        {"threshold": float(confidence[order][i]), "coverage": float(answered[i] / len(right)), "risk": float(error[i])}
        for i in picks
    ]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="the full CUB-200-2011 root")
    p.add_argument("--caltech", required=True, help="../shared/data/caltech101 (birds/ and non-birds/)")
    p.add_argument("--weights", default="inat-birds", help="the iNaturalist-birds file (or the word inat-birds)")
    p.add_argument("--out", default="bench/studies/birdid", help="folder for birdid.json and birdid.md")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", default="runs/birdid/outputs.pt", help="features and logits, reused when present")
    p.add_argument(
        "--imagenet",
        action="append",
        default=[],
        help="an ImageNet classifier file: gate candidates from its bird classes",
    )
    args = p.parse_args(argv)
    torch.manual_seed(SEED)
    model, card = load_pretrained(args.weights)
    model = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    view = card.transform()
    started = time.perf_counter()
    caltech = Path(args.caltech)
    sets = photo_sets(args.data_root, caltech, view)
    train, test = cast(CUB200, sets["cub_train"]), cast(CUB200, sets["cub_test"])
    held = CUB200(args.data_root, "val", None, val_fraction=VAL_FRACTION, val_seed=SEED)
    held_paths = {s.path for s in held.samples}
    other_paths = cast(Photos, sets["caltech_non_birds"]).paths
    caltech_classes = [path.relative_to(caltech / "non-birds").parts[0] for path in other_paths]
    cache = Path(args.cache)
    cached = cache.is_file()
    if cached:  # the one slow part, kept between runs (git-ignored)
        outputs = torch.load(cache, weights_only=True)
    else:
        outputs = {name: features_and_logits(model, photos, workers=args.workers) for name, photos in sets.items()}
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(cache, lambda f: torch.save(outputs, f))
    seconds = time.perf_counter() - started
    background = {k: logits.softmax(1)[:, -1].numpy() for k, (_, logits) in outputs.items()}
    # The gate, chosen on the training photos: keep BIRDS_KEPT of them.
    threshold = float(np.quantile(background["cub_train"], BIRDS_KEPT))
    gate = gate_report(background, threshold, caltech_classes)
    candidates = {"the bird file's background output": gate_candidate(background, caltech_classes)}
    second_latency = {}
    for file in args.imagenet:
        imagenet = imagenet_no_bird(file, args.data_root, caltech, cache, workers=args.workers)
        name = Path(file).name
        candidates[f"{name}: ImageNet's bird classes"] = gate_candidate(imagenet, caltech_classes)
        both = {k: log_odds(imagenet[k]) + log_odds(background[k]) for k in background}
        candidates[f"both, log-odds added ({name} beside the bird file)"] = gate_candidate(both, caltech_classes)
        second_latency[name] = second_network_latency(model, file, card.inference.resolution)
    # The recommended model's own outputs as the other candidate score: its top probability.
    train_x, test_x = outputs["cub_train"][0], outputs["cub_test"][0]
    train_y, test_y = torch.tensor(train.targets), torch.tensor(test.targets)
    probe = fit_probe(train_x, train_y, len(train.class_names), seed=SEED)
    weight, bias, l2 = probe.weight, probe.bias, probe.l2
    probe_top = {k: F.linear(x, weight, bias).softmax(1).max(1).values.numpy() for k, (x, _) in outputs.items()}
    own_birds = np.concatenate([probe_top["cub_test"], probe_top["caltech_birds"]])
    own_threshold = float(np.quantile(probe_top["cub_train"], 1 - BIRDS_KEPT))
    own = {
        "auroc": auroc(own_birds, probe_top["caltech_non_birds"]),
        "threshold": own_threshold,
        "non_birds_answered_as_bird": float((probe_top["caltech_non_birds"] >= own_threshold).mean()),
        "birds_kept": float((own_birds >= own_threshold).mean()),
    }
    # The fallback: a probe on the rule's 4,994 chooses the confidence on its 1,000 held out ...
    is_held = torch.tensor([s.path in held_paths for s in train.samples])
    fitted = fit_probe(train_x[~is_held], train_y[~is_held], len(train.class_names), seed=SEED)
    fit_w, fit_b = fitted.weight, fitted.bias
    levels = group_levels(taxa_of(list(train.class_names)))
    val_probabilities = F.linear(train_x[is_held], fit_w, fit_b).softmax(1)
    chosen, val_summary = choose_threshold(val_probabilities, train_y[is_held], levels, target=TARGET_RIGHT)
    # ... and the probe of every training photo reports it on the test split.
    test_probabilities = F.linear(test_x, weight, bias).softmax(1)
    test_levels = answer_levels(test_probabilities, test_y, levels, chosen)
    # The bird file's own answers: on the CUB photos of the species it has (one output each), its confidence
    # chosen on the same held-out sixth, reported on their test photos; genus from its scientific names.
    rows = output_rows(list(train.class_names), list(card.class_names))
    inat_taxa = taxa_of(list(card.class_names))
    one = torch.tensor([len(r) == 1 and inat_taxa[r[0]] is not None for r in rows])
    output_of = torch.tensor([r[0] if len(r) == 1 else -1 for r in rows])

    def inat_photos(split: str, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        labels = train_y if split == "cub_train" else test_y
        keep = one[labels] & (mask if mask is not None else torch.ones(len(labels), dtype=torch.bool))
        return outputs[split][1][keep].softmax(1), output_of[labels[keep]]

    inat_val = inat_photos("cub_train", is_held)
    inat_levels = group_levels(inat_taxa)
    inat_chosen, inat_val_summary = choose_threshold(*inat_val, inat_levels, target=TARGET_RIGHT)
    inat_test = inat_photos("cub_test")
    result = {
        "command": "python -m bench.birdid --data-root DIR/CUB_200_2011 --caltech ../shared/data/caltech101",
        "feature_seconds": None if cached else seconds,  # read from --cache: timed by the run that wrote it
        "images": {k: int(len(v[0])) for k, v in outputs.items()},
        "gate_background_output": gate,
        "gate_top_probability": own,
        "gate_candidates": candidates,
        "second_network_latency": second_latency,
        "probe_l2": l2,
        "probe_test_top1": float((test_probabilities.argmax(1) == test_y).double().mean()),
        "fallback_threshold": chosen,
        "fallback_validation": val_summary,
        "fallback_test": test_levels,
        "risk_coverage_test": risk_coverage(test_probabilities, test_y),
        "inat_species": int(one.sum()),
        "inat_fallback_threshold": inat_chosen,
        "inat_fallback_validation": inat_val_summary,
        "inat_fallback_test": answer_levels(*inat_test, inat_levels, inat_chosen),
        "inat_test_photos": int(len(inat_test[1])),
        "inat_test_top1": float((inat_test[0].argmax(1) == inat_test[1]).double().mean()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "birdid.json", json.dumps(result, indent=1))
    write_atomically(out / "birdid.md", report(result))
    print(report(result))
    return result


def report(r: dict) -> str:
    g, own, t, v = r["gate_background_output"], r["gate_top_probability"], r["fallback_test"], r["fallback_validation"]
    i = r["inat_fallback_test"]
    shares = ", ".join(f"{level} {t['share'][level]:.1%}" for level in LEVELS if t["share"].get(level))
    lines = [
        "# Bird ID: the gate and the answer at its level (`python -m bench.birdid`)",
        "",
        f"Images: {r['images']}.",
        "",
        "| gate | AUROC | birds kept (CUB test, Caltech birds) | non-birds answered as a bird |",
        "| --- | ---: | ---: | ---: |",
        f"| the bird file's background output, P < {g['threshold']:.4f} | {g['auroc']:.4f} | "
        f"{g['birds_kept']:.2%} ({g['cub_test_kept']:.2%}, {g['caltech_birds_kept']:.2%}) | "
        f"{g['non_birds_answered_as_bird']:.2%} of {g['non_birds']} |",
        f"| the probe's top probability, >= {own['threshold']:.4f} | {own['auroc']:.4f} | {own['birds_kept']:.2%} | "
        f"{own['non_birds_answered_as_bird']:.2%} |",
        "",
        "Gate candidates (figures on the test birds: CUB test and Caltech birds; a threshold from held-out non-bird "
        "classes is reported on the other fold, as fold 0 / fold 1):",
        "",
        "| score | AUROC | non-birds as a bird at 98% of birds kept | keep 98% of training birds: birds kept "
        "(Caltech birds), non-birds as a bird | 1% of held-out non-birds: birds kept, non-birds as a bird |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {name} | {c['auroc']:.4f} | {c['non_birds_as_bird_at_98_of_birds']:.2%} | "
            f"{c['keep_98_of_training_birds']['birds_kept']:.2%} ({c['keep_98_of_training_birds']['caltech_birds_kept']:.2%}), "
            f"{c['keep_98_of_training_birds']['non_birds_answered_as_bird']:.2%} | "
            + " / ".join(f"{k:.2%}" for k in c["one_percent_of_held_out_non_birds"]["birds_kept"])
            + ", "
            + " / ".join(f"{t:.2%}" for t in c["one_percent_of_held_out_non_birds"]["non_birds_answered_as_bird"])
            + " |"
            for name, c in r.get("gate_candidates", {}).items()
        ),
        *(
            f"\nThe cost of {name} beside the bird file at batch 1 (interleaved, 15 rounds): {lat['plain_ms']:.1f} ms "
            f"alone, {lat['with_second_network_ms']:.1f} ms with it: {lat['ratio']:.2f}x."
            for name, lat in r.get("second_network_latency", {}).items()
        ),
        "",
        f"On the ROC curve (a point, not a chosen threshold): at 98% of all bird photos kept, "
        f"{g['non_birds_as_bird_at_98_of_birds']:.2%} of non-birds are answered as a bird; at 98% of CUB's test "
        f"photos kept, {g['non_birds_as_bird_at_98_of_cub_test']:.2%}.",
        "",
        "Non-bird classes let through most: "
        + ", ".join(f"{w['class']} {w['answered_as_bird']:.0%} of {w['photos']}" for w in g["worst_non_bird_classes"]),
        "",
        f"Fallback: confidence {r['fallback_threshold']:.3f} chosen on validation (right {v['right']:.2%}, "
        f"species level {v['share']['species']:.1%}); on the test split (probe top-1 {r['probe_test_top1']:.2%}): "
        f"right at the level given {t['right']:.2%}; answered at {shares}.",
        "",
        f"The bird file's own answers on the {r['inat_test_photos']} test photos of the {r['inat_species']} CUB species it "
        f"has (top-1 {r['inat_test_top1']:.2%}): confidence {r['inat_fallback_threshold']:.2f} chosen on validation; "
        f"right at the level given {i['right']:.2%}; answered at "
        + ", ".join(f"{level} {i['share'][level]:.1%}" for level in LEVELS if i["share"].get(level))
        + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run("bench.birdid", main)
