"""Bird ID's parts: the taxonomy data, the answer at the level the model is sure of, AUROC."""

import csv

import numpy as np
import pytest
import torch

from data.species_map import MAP_FILE
from data.taxonomy import TAXONOMY_FILE, Taxon, cub_taxa, inat_taxon, taxa_of
from deploy.answer import Answer, answer, answer_levels, choose_threshold
from evaluation.metrics import auroc
from tests.conftest import requires_deploy


def test_the_cub_taxonomy_covers_every_class_and_nests():
    """Every CUB class once, in the species map's order and names; a species' genus is its name's first word;
    each genus sits in one family and each family in one order (a tree); the 4 genus-level classes are CUB's."""
    rows, mapped = (
        list(csv.DictReader(f.read_text(encoding="utf-8").splitlines(), delimiter="\t"))
        for f in (TAXONOMY_FILE, MAP_FILE)
    )
    assert [(r["cub_id"], r["cub_name"]) for r in rows] == [(r["cub_id"], r["cub_name"]) for r in mapped]
    assert {r["cub_name"] for r in rows if r["level"] == "genus"} == {
        "Frigatebird",
        "Nighthawk",
        "Sayornis",
        "Geococcyx",
    }
    family_of, order_of = {}, {}
    for r in rows:
        words = r["scientific_name"].split()
        assert words[0] == r["genus"] and len(words) == (2 if r["level"] == "species" else 1), r
        assert r["family"].endswith("idae") and r["order"].endswith("formes"), r
        assert family_of.setdefault(r["genus"], r["family"]) == r["family"], r
        assert order_of.setdefault(r["family"], r["order"]) == r["order"], r
    # Where the bird file names a CUB species otherwise, the note says so.
    for r, m in zip(rows, mapped):
        if m["level"] == "species":
            inat = m["inat_labels"].split(" (")[0]
            assert (inat == r["scientific_name"]) == (r["note"] == ""), r


def test_inat_labels_give_their_genus_in_either_order_and_for_hybrids():
    assert inat_taxon("Haemorhous cassinii (Cassin's Finch)") == Taxon("Haemorhous cassinii", "Haemorhous")
    assert inat_taxon("Cassin's Finch (Haemorhous cassinii)") == Taxon("Haemorhous cassinii", "Haemorhous")
    assert inat_taxon("Black-and-white Warbler (Mniotilta varia)").genus == "Mniotilta"
    assert inat_taxon("Larus glaucescens \\xd7 occidentalis (Olympic Gull)").genus == "Larus"
    assert inat_taxon("background") is None and inat_taxon("no bird (the model's background output)") is None
    assert taxa_of(["Laysan Albatross", "background"]) == [cub_taxa()["Laysan Albatross"], None]


TAXA = [
    Taxon("A a", "A", "Xidae", "Pformes"),
    Taxon("A b", "A", "Xidae", "Pformes"),
    Taxon("B c", "B", "Xidae", "Pformes"),
    Taxon("C d", "C", "Yidae", "Pformes"),
    None,  # a background output
]
NAMES = ["a", "b", "c", "d", "background"]


def test_the_answer_falls_back_to_the_first_level_sure_enough():
    p = torch.tensor([0.50, 0.30, 0.10, 0.05, 0.05])
    assert answer(p, NAMES, TAXA, 0.5) == Answer("species", "a", 0.5)
    assert answer(p, NAMES, TAXA, 0.7) == Answer("genus", "A", pytest.approx(0.8))  # a + b
    assert answer(p, NAMES, TAXA, 0.85) == Answer("family", "Xidae", pytest.approx(0.9))  # a + b + c
    assert answer(p, NAMES, TAXA, 0.93) == Answer("order", "Pformes", pytest.approx(0.95))  # not the background
    assert answer(p, NAMES, TAXA, 0.99).level == "bird"


def test_the_summary_over_photos_agrees_with_answering_each_photo():
    torch.manual_seed(0)
    probabilities = (torch.randn(300, 5) * 2).softmax(1)
    labels = torch.randint(0, 4, (300,))
    for threshold in (0.3, 0.6, 0.9):
        summary = answer_levels(probabilities, labels, TAXA, threshold)
        answers = [answer(p, NAMES, TAXA, threshold) for p in probabilities]
        for level in ("species", "genus", "family", "order", "bird"):
            share = sum(a.level == level for a in answers) / len(answers)
            assert summary["share"][level] == pytest.approx(share)

        def right(a: Answer, y: int) -> bool:
            if a.level in ("species", "bird"):
                return a.level == "bird" or a.name == NAMES[y]
            return getattr(TAXA[y], a.level) == a.name

        assert summary["right"] == pytest.approx(np.mean([right(a, int(y)) for a, y in zip(answers, labels)]))
    chosen, at = choose_threshold(probabilities, labels, TAXA, target=0.9)
    assert at["right"] >= 0.9 and answer_levels(probabilities, labels, TAXA, chosen - 0.01)["right"] < 0.9


def test_auroc_is_the_share_of_positive_negative_pairs_ranked_right():
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(1, 1, 60).round(1), rng.normal(0, 1, 80).round(1)  # rounded: ties
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    assert auroc(positive, negative) == pytest.approx(np.mean(pairs))
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0


def with_gate(checkpoint, tmp_path, threshold: float):
    """A copy of a trained checkpoint that carries a gate (a 3-way head on its features, output 2 "no bird")
    and a gate threshold in its card, as a probe of the bird file writes them."""
    from mobilenet.checkpoint import save_checkpoint

    state = torch.load(checkpoint, weights_only=True)
    features = state["model"]["classifier.weight"].shape[1]
    generator = torch.Generator().manual_seed(0)
    state["gate"] = {
        "weight": torch.randn(3, features, generator=generator),
        "bias": torch.zeros(3),
        "no_bird": 2,
    }
    state["card"] = dict(state["card"], gate_threshold=threshold)
    state.pop("tensor_sha256", None)
    save_checkpoint(state, tmp_path / "gated.pt")
    return tmp_path / "gated.pt", state["gate"]


def test_a_gated_model_says_no_bird_when_its_gate_s_probability_reaches_the_threshold(tiny_checkpoint, tmp_path):
    from data.cub import pil_to_tensor
    from deploy.images import decode_image
    from deploy.predictor import Predictor
    from mobilenet import load_checkpoint
    from tests.conftest import jpeg_bytes

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 250, 250), (0, 0, 0), (120, 80, 40)]
    photos = [decode_image(jpeg_bytes((90, 70), colour=c)) for c in colours]
    _, gate = with_gate(tiny_checkpoint, tmp_path, 0.5)
    model, card, _ = load_checkpoint(tiny_checkpoint)
    x = torch.stack([card.transform()(pil_to_tensor(p)) for p in photos])
    with torch.no_grad():  # by hand: the gate's softmax on the model's own pooled features
        pooled = model.pool(model.forward_features(x)).flatten(1)
        expected = (pooled @ gate["weight"].T + gate["bias"]).softmax(1)[:, 2].double()
        species = model(x).softmax(1)
    ordered = expected.sort().values
    threshold = float(ordered[2] + ordered[3]) / 2  # half the photos on either side, none near it
    path, _ = with_gate(tiny_checkpoint, tmp_path, threshold)
    results = Predictor.load(path).predict(photos, k=2)
    got = torch.tensor([r["no_bird_probability"] for r in results], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for r, p, s in zip(results, expected.tolist(), species):
        assert r["bird"] == (p < threshold) and (r["answer"] is None) == (p >= threshold)
        assert r["top"][0]["probability"] == pytest.approx(float(s.max()), rel=1e-4)
    assert 0 < sum(r["bird"] for r in results) < len(results)


@requires_deploy
def test_the_gate_travels_in_the_exported_onnx_file(tiny_checkpoint, tiny_synthetic_root, tmp_path):
    import export
    from deploy.images import decode_image
    from deploy.predictor import Predictor
    from tests.conftest import jpeg_bytes

    path, _ = with_gate(tiny_checkpoint, tmp_path, 0.3)
    out = tmp_path / "gated.onnx"
    export.main(["--checkpoint", str(path), "--out", str(out), "--images", str(tiny_synthetic_root / "images"),
                 "--verify-count", "2"])  # fmt: skip
    photos = [decode_image(jpeg_bytes((90, 70), colour=c)) for c in ((200, 30, 30), (0, 0, 0))]
    from_onnx, from_checkpoint = Predictor.load(out).predict(photos), Predictor.load(path).predict(photos)
    for a, b in zip(from_onnx, from_checkpoint):
        assert a["bird"] == b["bird"] and a["no_bird_probability"] == pytest.approx(b["no_bird_probability"], abs=1e-5)
