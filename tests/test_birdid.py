"""Bird ID's parts: the taxonomy data, the answer at the level the model is sure of, AUROC."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from data.species_map import MAP_FILE
from data.taxonomy import TAXONOMY_FILE, Taxon, cub_taxa, inat_families, inat_taxon, taxa_of
from deploy.answer import Answer, answer, answer_levels, choose_threshold, group_levels
from evaluation.metrics import auroc, lookalikes
from tests.conftest import WEIGHTS, requires_deploy, requires_weights


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
    finch = Taxon("Haemorhous cassinii", "Haemorhous", "Fringillidae", "Passeriformes")
    assert inat_taxon("Haemorhous cassinii (Cassin's Finch)") == finch
    assert inat_taxon("Cassin's Finch (Haemorhous cassinii)") == finch
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
GROUPS = group_levels(TAXA)


def test_the_answer_falls_back_to_the_first_level_sure_enough():
    p = torch.tensor([0.50, 0.30, 0.10, 0.05, 0.05])
    assert answer(p, NAMES, GROUPS, 0.5) == Answer("species", "a", 0.5)
    assert answer(p, NAMES, GROUPS, 0.7) == Answer("genus", "A", pytest.approx(0.8))  # a + b
    assert answer(p, NAMES, GROUPS, 0.85) == Answer("family", "Xidae", pytest.approx(0.9))  # a + b + c
    assert answer(p, NAMES, GROUPS, 0.93) == Answer("order", "Pformes", pytest.approx(0.95))  # not the background
    assert answer(p, NAMES, GROUPS, 0.99).level == "bird"


def test_the_summary_over_photos_agrees_with_answering_each_photo():
    torch.manual_seed(0)
    probabilities = (torch.randn(300, 5) * 2).softmax(1)
    labels = torch.randint(0, 4, (300,))
    for threshold in (0.3, 0.6, 0.9):
        summary = answer_levels(probabilities, labels, GROUPS, threshold)
        answers = [answer(p, NAMES, GROUPS, threshold) for p in probabilities]
        for level in ("species", "genus", "family", "order", "bird"):
            share = sum(a.level == level for a in answers) / len(answers)
            assert summary["share"][level] == pytest.approx(share)

        def right(a: Answer, y: int) -> bool:
            if a.level in ("species", "bird"):
                return a.level == "bird" or a.name == NAMES[y]
            return getattr(TAXA[y], a.level) == a.name

        assert summary["right"] == pytest.approx(np.mean([right(a, int(y)) for a, y in zip(answers, labels)]))
    chosen, at = choose_threshold(probabilities, labels, GROUPS, target=0.9)
    assert at["right"] >= 0.9 and answer_levels(probabilities, labels, GROUPS, chosen - 0.01)["right"] < 0.9


def test_auroc_is_the_share_of_positive_negative_pairs_ranked_right():
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(1, 1, 60).round(1), rng.normal(0, 1, 80).round(1)  # rounded: ties
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    assert auroc(positive, negative) == pytest.approx(np.mean(pairs))
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0


def test_a_gate_candidate_s_operating_points_are_the_hand_computed_ones():
    from bench.birdid import gate_candidate

    no_bird = {  # the score: higher, less likely a bird
        "cub_train": np.linspace(0, 0.5, 101),  # its 98% quantile: 0.49
        "cub_test": np.array([0.2, 0.6]),
        "caltech_birds": np.array([0.3, 0.95]),
        "caltech_non_birds": np.array([0.7, 0.8, 0.4, 0.9, 0.96, 0.97, 0.98, 0.99]),
    }
    classes = ["a", "a", "b", "b", "c", "c", "d", "d"]  # folds by sorted name: a, c -> 0; b, d -> 1
    got = gate_candidate(no_bird, classes)
    # Birds 0.2, 0.3 score below 0.49; of the non-birds only 0.4.
    assert got["keep_98_of_training_birds"] == {
        "birds_kept": 0.5,
        "caltech_birds_kept": 0.5,
        "non_birds_answered_as_bird": 1 / 8,
    }
    # Fold 0's (0.7, 0.8, 0.96, 0.97) 1% quantile is 0.703: three of four birds below it, and of fold 1's
    # non-birds only 0.4; fold 1's (0.4, 0.9, 0.98, 0.99) is 0.415: two birds, none of fold 0's non-birds.
    assert got["one_percent_of_held_out_non_birds"] == {
        "birds_kept": [0.75, 0.5],
        "non_birds_answered_as_bird": [0.25, 0],
    }
    # 98% of the birds (0.2, 0.3, 0.6, 0.95) are below 0.929: 0.4, 0.7, 0.8 and 0.9 of the non-birds too.
    assert got["non_birds_as_bird_at_98_of_birds"] == 0.5
    assert got["auroc"] == pytest.approx(27 / 32)  # bird-non-bird pairs ordered right: 8 + 8 + 7 + 4


@requires_weights
def test_imagenet_s_bird_classes_are_the_three_runs_of_birds_in_google_s_label_file():
    from mobilenet.gate import IMAGENET_BIRDS

    labels = (WEIGHTS / "imagenet_labels.txt").read_text().splitlines()[1:]  # its first line is "background"
    names = [labels[i].split(",")[0] for i in IMAGENET_BIRDS]
    assert len(names) == 59 and names[:3] == ["cock", "hen", "ostrich"] and names[-1] == "albatross"
    assert {"goldfinch", "bald eagle", "hummingbird", "flamingo", "king penguin"} <= set(names)
    # the classes either side of each run are not birds: a ray, a salamander, a centipede, an elephant, ...
    beside = [labels[i].split(",")[0] for i in (6, 25, 79, 101, 126, 147)]
    assert beside == ["stingray", "European fire salamander", "centipede", "tusker", "isopod", "grey whale"]


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
    import predict
    from cli import UsageError

    (tmp_path / "p.jpg").write_bytes(jpeg_bytes((90, 70)))
    with pytest.raises(UsageError, match="--explain: .*gated.onnx is an ONNX file"):
        predict.main([str(tmp_path / "p.jpg"), "--checkpoint", str(out), "--explain", str(tmp_path / "x")])


def test_a_class_s_look_alike_is_the_class_its_photos_are_most_taken_for():
    probabilities = torch.tensor(
        [
            [0.7, 0.2, 0.1, 0.0],  # class 0's photos lean to class 1 ...
            [0.6, 0.3, 0.1, 0.0],
            [0.1, 0.8, 0.1, 0.0],  # ... class 1's to class 2 (0.1 + 0.5 over two photos) rather than 0 (0.1 + 0.2)
            [0.2, 0.3, 0.5, 0.0],
            [0.0, 0.1, 0.9, 0.0],  # class 2's photo: to class 1
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 2])
    assert lookalikes(probabilities, labels) == (1, 2, 1, -1)  # class 3 has no held-out photo


@requires_deploy
def test_the_service_says_no_bird_and_shows_where_it_looked(tiny_checkpoint, tmp_path):
    from fastapi.testclient import TestClient

    from deploy.predictor import Predictor
    from serve import create_app
    from tests.conftest import jpeg_bytes

    def ask(path, **params) -> dict:
        client = TestClient(create_app(Predictor.load(path), max_bytes=10**6, max_pixels=10**7, max_concurrent=2))
        photo = {"file": ("bird.jpg", jpeg_bytes((120, 90)), "image/jpeg")}
        return client.post("/predict", params=params, files=photo).json()

    nothing, _ = with_gate(tiny_checkpoint, tmp_path, 1e-9)  # every photo's no-bird probability reaches it
    answered = ask(nothing, explain="true")
    assert answered["bird"] is False and answered["answer"] is None and "heatmap" not in answered
    plain = ask(tiny_checkpoint, explain="true")
    assert plain["bird"] is None and plain["answer"]["name"] == plain["top"][0]["label"]
    assert plain["heatmap"].startswith("data:image/jpeg;base64,")


def test_predict_explain_writes_where_the_model_looked_for_each_bird_photo(tiny_checkpoint, tmp_path):
    """One picture per bird photo, the size of the view the model saw, named after the photo; none for a photo
    the gate finds no bird in (the map itself: the test below)."""
    from PIL import Image

    import predict
    from tests.conftest import jpeg_bytes

    (tmp_path / "photos").mkdir()
    for i, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        (tmp_path / "photos" / f"p{i}.jpg").write_bytes(jpeg_bytes((96, 80), colour=colour))
    results = predict.main(
        [str(tmp_path / "photos"), "--checkpoint", str(tiny_checkpoint), "--explain", str(tmp_path / "x")]
    )
    assert [Path(r["explained"]).name for r in results] == ["0000-p0.jpg", "0001-p1.jpg"]
    for r in results:
        with Image.open(r["explained"]) as picture:
            assert picture.size == (64, 64) and picture.mode == "RGB"
    nothing, _ = with_gate(tiny_checkpoint, tmp_path, 1e-9)
    silent = predict.main([str(tmp_path / "photos"), "--checkpoint", str(nothing), "--explain", str(tmp_path / "y")])
    assert all(r["bird"] is False and "explained" not in r for r in silent)  # no bird: nothing to explain


def test_grad_cam_of_a_pooled_linear_head_is_the_class_weights_on_the_feature_map():
    """Grad-CAM (Selvaraju et al. 2017) by hand, without autograd: behind global average pooling and a linear
    classifier, the gradient of class c's score at every cell of the last map is W[c] / (h w), so its weights
    are W[c] / (h w) and the map is ReLU(sum_k W[c, k] A_k) / (h w), upsampled and scaled to a peak of 1."""
    import torch.nn.functional as F

    from evaluation.gradcam import grad_cam
    from mobilenet import create_model

    torch.manual_seed(0)
    model = create_model("v2", width_mult=0.35, num_classes=5).eval()
    torch.nn.init.normal_(model.classifier.weight)
    x = torch.randn(2, 3, 96, 96)
    target = torch.tensor([1, 3])
    cams, _ = grad_cam(model, x, target)
    with torch.no_grad():
        features = model.forward_features(x)
        weights = model.classifier.weight[target][:, :, None, None]
        by_hand = F.relu((weights * features).sum(1, keepdim=True))
        by_hand = F.interpolate(by_hand, size=(96, 96), mode="bilinear", align_corners=False)[:, 0]
        by_hand = by_hand / by_hand.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(cams, by_hand, rtol=1e-4, atol=1e-5)


def test_bad_bird_id_options_are_one_line_naming_the_flag(tiny_checkpoint, tmp_path):
    from tests.test_hostile import one_line_error, run_cli

    (tmp_path / "photo.jpg").write_bytes(b"not read")
    (tmp_path / "file").write_text("")
    result = run_cli(
        "predict.py",
        str(tmp_path / "photo.jpg"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--explain",
        str(tmp_path / "file"),
    )
    assert result.returncode == 2 and "--explain" in one_line_error(result, "predict.py")
    result = run_cli("train.py", "--answer-threshold", "1.5")
    assert result.returncode == 2 and "--answer-threshold" in one_line_error(result, "train.py")


def test_a_run_records_each_class_s_look_alike_from_its_validation_photos(tiny_checkpoint):
    """The tiny run held 10% of its photos out: its last epoch's validation probabilities give each class the
    other class it was most taken for, stored in the card (and shown by predict and serve)."""
    from mobilenet import load_checkpoint

    _, card, _ = load_checkpoint(tiny_checkpoint)
    assert len(card.lookalikes) == 4 and all(j != k for k, j in enumerate(card.lookalikes) if j >= 0)
    assert any(j >= 0 for j in card.lookalikes)


def test_every_genus_of_the_bird_file_has_one_family_and_agrees_with_cub_s_where_both_name_it():
    """The 439 genera of the bird file's labels, each with one family and order (eBird 2017); where a genus is
    also one of CUB's (Barz and Denzler's Wikispecies hierarchy, an independent source), both put it in the
    same family."""
    families = inat_families()
    labels = [row["inat_labels"] for row in csv.DictReader(MAP_FILE.read_text().splitlines(), delimiter="\t")]
    genera = {inat_taxon(label, families).genus for line in labels if line for label in line.split(" | ")}
    assert genera <= set(families) and len(families) == 439
    assert all(f.endswith("idae") and o.endswith("formes") for f, o in families.values())
    cub = {t.genus: t.family for t in cub_taxa().values()}
    differ = {g: (cub[g], families[g][0]) for g in cub if g in families and cub[g] != families[g][0]}
    assert differ == {}, differ
