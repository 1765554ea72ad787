"""The bird expert's start: the species map, the `inat-birds` download, the transplanted head, zero-shot."""

import hashlib
import json
import math

import pytest
import torch
from torch import nn

import train
from data.cub import CUB200, readable_class_name
from data.species_map import MAP_FILE, build_map, common_name_first, normalise, output_rows, read_map
from mobilenet import pretrained
from mobilenet.checkpoint import load_checkpoint
from mobilenet.preprocess import eval_transform
from mobilenet.pretrained import Download, fetch, labels_beside, load_pretrained, transplant_head
from tests.conftest import CUB20, WEIGHTS, requires_cub20, requires_weights

BIRD_FILE = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
CUB200_CLASSES = WEIGHTS.parent / "data" / "cub200_classes.txt" if WEIGHTS else None
# The CUB classes with no iNat 2017 bird at species level, checked by hand against inat_bird_labels.txt.
UNMAPPED = {
    "Sooty Albatross", "Crested Auklet", "Least Auklet", "Parakeet Auklet", "Spotted Catbird", "Chuck-will Widow",
    "Red-faced Cormorant", "Shiny Cowbird", "Gray-crowned Rosy Finch", "Acadian Flycatcher",
    "Yellow-bellied Flycatcher", "Ivory Gull", "Slaty-backed Gull", "Green Violetear", "Long-tailed Jaeger",
    "Red-legged Kittiwake", "Whip-poor Will", "Horned Puffin", "White-necked Raven", "Baird Sparrow",
    "Henslow Sparrow", "Le Conte Sparrow", "Cape Glossy Starling", "Black-capped Vireo", "Swainson Warbler",
    "Red-cockaded Woodpecker",
}  # fmt: skip


def test_the_committed_map_covers_cub200_once_with_the_counts_reviewed():
    known = read_map()
    assert sorted(m.cub_id for m in known.values()) == list(range(1, 201))
    levels = [m.level for m in known.values()]
    assert (levels.count("species"), levels.count("genus"), levels.count("none")) == (170, 4, 26)
    assert {m.cub_name for m in known.values() if m.level == "none"} == UNMAPPED
    for m in known.values():
        assert (len(m.inat_labels) == 1) if m.level == "species" else (len(m.inat_labels) > 1 or m.level == "none")
        assert all(common_name_first(lab) != lab for lab in m.inat_labels)  # every label is "Scientific (Common)"


def test_spot_checks_of_known_pairs():
    known = read_map()
    assert known["Cardinal"].inat_labels == ("Cardinalis cardinalis (Northern Cardinal)",)
    assert known["Florida Jay"].inat_labels == ("Aphelocoma coerulescens (Florida Scrub-Jay)",)
    assert known["Brewer Blackbird"].inat_labels == ("Euphagus cyanocephalus (Brewer's Blackbird)",)
    assert known["Forsters Tern"].inat_labels == ("Sterna forsteri (Forster's Tern)",)
    assert known["Black-footed Albatross"].inat_labels == ("Phoebastria nigripes (Black-footed Albatross)",)
    assert {lab.split()[0] for lab in known["Frigatebird"].inat_labels} == {"Fregata"}
    assert len(known["Sayornis"].inat_labels) == 3  # Eastern, Black and Say's Phoebe
    assert normalise("Brewer's Blackbird") == normalise("Brewer Blackbird") == "brewerblackbird"
    assert normalise("Great Grey Shrike") == normalise("great gray shrike")


@requires_weights
def test_the_map_is_what_the_generator_makes_from_the_real_files():
    labels = (WEIGHTS / "inat_bird_labels.txt").read_text(encoding="utf-8").splitlines()
    cub = []
    for line in CUB200_CLASSES.read_text(encoding="utf-8").splitlines():
        cub_id, folder = line.split(maxsplit=1)
        cub.append((int(cub_id), readable_class_name(folder)))
    assert {m.cub_name: m for m in build_map(labels, cub)} == read_map(MAP_FILE)
    rows = output_rows(["Cardinal", "Frigatebird", "Sooty Albatross", "not a bird"], labels)
    assert [labels[i] for i in rows[0]] == ["Cardinalis cardinalis (Northern Cardinal)"]
    assert len(rows[1]) == 2 and rows[2] == [] and rows[3] == []


def test_transplant_copies_rows_and_a_genus_sums_its_species():
    torch.manual_seed(0)
    source = nn.Linear(8, 4)
    with torch.no_grad():
        source.weight[3] = source.weight[2]  # two species the features cannot tell apart
        source.bias[3] = source.bias[2]
    model = pretrained.create_model("v2", width_mult=0.35, num_classes=3)
    model.num_features = 8
    model.classifier = nn.Linear(8, 3)
    fresh = model.classifier.weight[2].clone()
    transplant_head(model, source, [[1], [2, 3], []])
    x = torch.randn(5, 8)
    new, old = model.classifier(x), source(x)
    torch.testing.assert_close(new[:, 0], old[:, 1])
    # The genus's logit is the log of its two species' summed exp-logits, exactly when their rows agree.
    torch.testing.assert_close(new[:, 1], torch.logsumexp(old[:, 2:4], 1))
    torch.testing.assert_close(model.classifier.weight[2], fresh)
    with pytest.raises(ValueError, match="cannot start"):
        transplant_head(model, nn.Linear(9, 4), [[0], [1], [2]])


def test_fetch_downloads_checks_and_names_the_path_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # torch.hub.set_dir, undone after
    source = tmp_path / "published" / "birds.tflite"
    source.parent.mkdir()
    source.write_bytes(b"model bytes")
    good = Download(source.as_uri(), hashlib.sha256(b"model bytes").hexdigest())
    local = fetch(good)
    assert local == tmp_path / "hub" / "checkpoints" / "birds.tflite" and local.read_bytes() == b"model bytes"
    assert fetch(good) == local  # a second call reads the local copy, checked again
    local.write_bytes(b"tampered")
    with pytest.raises(RuntimeError, match="SHA-256 .* expected"):
        fetch(good)
    missing = Download((tmp_path / "nowhere.tflite").as_uri(), good.sha256)
    with pytest.raises(RuntimeError, match=r"could not download file://.*put the file at .*nowhere\.tflite"):
        fetch(missing)
    assert not (tmp_path / "hub" / "checkpoints" / "nowhere.tflite").exists()


def test_labels_beside_picks_the_one_file_that_fits(tmp_path):
    model = tmp_path / "m.tflite"
    (tmp_path / "inat_labels.txt").write_text("a (A)\nb (B)\nbackground\n")  # background last: kept
    (tmp_path / "imagenet_labels.txt").write_text("background\nw\nx\ny\nz\n")  # first: dropped with the head's
    assert labels_beside(model, 3) == ["a (A)", "b (B)", "background"]
    assert labels_beside(model, 4) == ["w", "x", "y", "z"]
    assert labels_beside(model, 5) == ["background", "w", "x", "y", "z"]  # a head that kept its background
    assert labels_beside(model, 6) is None
    (tmp_path / "more_labels.txt").write_text("p\nq\nr\n")
    assert labels_beside(model, 3) is None  # two files fit: no labels rather than perhaps the wrong ones


@requires_weights
def test_inat_birds_loads_with_its_965_way_head_and_labels():
    model, card = load_pretrained(WEIGHTS / BIRD_FILE)
    assert model.classifier.out_features == 965
    assert card.class_names[-1] == "background" and len(card.class_names) == 965
    assert card.class_names[0] == "Haemorhous cassinii (Cassin's Finch)"
    # The file's own input (its uint8 quantization: (pixel - 128) / 128), 224 px, one plain pass.
    assert card.resolution == 224 and card.inference.passes == 1
    assert card.mean == pytest.approx((128 / 255,) * 3) and card.std == pytest.approx((128 / 255,) * 3, rel=1e-3)


@requires_cub20
@requires_weights
def test_zero_shot_start_is_the_bird_experts_own_answer(tmp_path):
    """`--epochs 0`: the start evaluated and checkpointed; on mapped classes it answers as Google's model does,
    argmax over those species' outputs (the raw import, no batch-norm re-estimation, its own preprocessing)."""
    out = tmp_path / "run"
    args = ["--pretrained", str(WEIGHTS / BIRD_FILE), "--data-root", str(CUB20), "--classes", "1,2,4"]
    args += ["--epochs", "0", "--transplant-head", "--workers", "0", "--no-progress"]
    final = train.main([*args, "--out", str(out)])
    raw, raw_card = load_pretrained(WEIGHTS / BIRD_FILE)
    rows = output_rows(["Black-footed Albatross", "Laysan Albatross", "Groove-billed Ani"], list(raw_card.class_names))
    columns = [r[0] for r in rows]
    test = CUB200(CUB20, "test", eval_transform(224, mean=raw_card.mean, std=raw_card.std))
    test = CUB200(CUB20, "test", test.transform, classes=[1, 2, 4])
    images, labels = zip(*(test[i] for i in range(len(test))))
    with torch.no_grad():
        expected = (raw(torch.stack(images))[:, columns].argmax(1) == torch.tensor(labels)).double().mean()
    assert final["test_top1"] == pytest.approx(expected.item(), abs=1 / len(test))  # one image of float noise
    assert final["test_top1_mapped"] == final["test_top1"] and final["test_top1_unmapped"] is None
    model, _, info = load_checkpoint(out / "best.pt")  # evaluate.py's reader
    assert info["epoch"] == 0 and info["config"]["transplant_head"] is True
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 0


@requires_weights
def test_predict_names_a_species_with_the_published_file(tmp_path):
    import predict
    from deploy.predictor import Predictor

    predictor = Predictor.load(WEIGHTS / BIRD_FILE)
    # 965 outputs: 964 species, and the background output answered as "no bird" rather than named a species
    assert len(predictor.class_names) == 965 and predictor.class_names[-1].startswith("no bird")
    assert predictor.species == 964
    assert predictor.class_names[0] == "Cassin's Finch (Haemorhous cassinii)"
    assert "as published" in predictor.name and BIRD_FILE in predictor.name
    # Its answer is the raw import's argmax on the same preprocessed input.
    raw, _ = load_pretrained(WEIGHTS / BIRD_FILE)
    from PIL import Image

    image = Image.open(WEIGHTS / "parrot.jpg").convert("RGB")
    with torch.no_grad():
        expected = raw(torch.from_numpy(predictor.preprocess(image))[None]).argmax(1).item()
    results = predict.main([str(WEIGHTS / "parrot.jpg"), "--checkpoint", str(WEIGHTS / BIRD_FILE), "--top-k", "3"])
    assert results[0]["top"][0]["index"] == expected
    assert not math.isnan(results[0]["top"][0]["probability"])
    # "Is there a bird?": the file's own background output, at the threshold that keeps 98% of CUB's training
    # photos (mobilenet.pretrained.INAT_BIRDS_GATE_THRESHOLD): the macaw is a bird, the hot dog is not.
    assert results[0]["bird"] is True and results[0]["answer"]["name"] == predictor.class_names[expected]
    hot_dog = predict.main([str(WEIGHTS / "hot_dog.jpg"), "--checkpoint", str(WEIGHTS / BIRD_FILE)])[0]
    assert hot_dog["bird"] is False and hot_dog["answer"] is None and hot_dog["no_bird_probability"] > 0.5
    assert all(t["label"] != predictor.class_names[-1] for t in hot_dog["top"])  # "background" is no species


def test_the_bird_start_has_its_own_recipe_and_is_recognised_by_content(tmp_path):
    from mobilenet.pretrained import is_bird_start
    from training.config import RECIPES, resolve_config

    flags = {"pretrained": "inat-birds"}
    birds = resolve_config(flags, data_root="x", builtin_data=False, bird_start=True)
    imagenet = resolve_config({"pretrained": "imagenet"}, data_root="x", builtin_data=False)
    assert birds.recipe == "finetune-birds" and imagenet.recipe == "finetune"
    for key, value in RECIPES["finetune-birds"].items():
        if key != "resolution":
            assert getattr(birds, key) == value, key
    assert is_bird_start("inat-birds") and not is_bird_start("imagenet")
    (tmp_path / "renamed.tflite").write_bytes(b"not the bird file")
    assert not is_bird_start(tmp_path / "renamed.tflite")
    if WEIGHTS is not None:
        assert is_bird_start(WEIGHTS / BIRD_FILE)  # by its SHA-256, whatever the file is called
        assert not is_bird_start(WEIGHTS / "mobilenet_v2_1.0_224_quant.tflite")
