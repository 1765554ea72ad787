"""Which outputs of Google's iNaturalist-birds MobileNetV2 (964 species + background) are which CUB class.

The map itself is data, `data/cub200_inat_birds.tsv`, one row per CUB-200 class: its id and name, the level of
the match (`species`, `genus`: several iNat species together, or `none`), the iNat labels
(`Scientific name (Common Name)`, joined by ` | `) and how the match was found:
- `name`: the common names agree once normalised (case, hyphens, spaces, "'s", grey/gray);
- `renamed`: CUB uses an older or other English name; the iNat species is fixed by its scientific name
  (`RENAMES`);
- `genus`: CUB's class is a genus (`GENERA`); every iNat species of that genus is listed.

`python -m data.species_map LABELS CLASSES` rewrites the file from the iNat labels file and CUB's full
`classes.txt` (both in `../shared`); the file is committed so that the map can be reviewed line by line.
"""

import argparse
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from atomicfile import write_atomically
from cli import UsageError, run

MAP_FILE = Path(__file__).resolve().parent / "cub200_inat_birds.tsv"
FIELDS = ("cub_id", "cub_name", "level", "inat_labels", "how")
LEVELS = ("species", "genus", "none")
CUB_CLASSES = 200
SEPARATOR = " | "
# CUB name -> the iNat scientific name of the same species under another English name.
RENAMES = {
    "Cardinal": "Cardinalis cardinalis",  # Northern Cardinal
    "Florida Jay": "Aphelocoma coerulescens",  # Florida Scrub-Jay
    "Mockingbird": "Mimus polyglottos",  # Northern Mockingbird
    "White Pelican": "Pelecanus erythrorhynchos",  # American White Pelican
    "Great Grey Shrike": "Lanius excubitor",  # Northern Shrike in the iNat 2017 taxonomy
    "Tree Sparrow": "Spizelloides arborea",  # American Tree Sparrow: CUB's birds are North American
    "Artic Tern": "Sterna paradisaea",  # CUB's misspelling of Arctic Tern
    "Nelson Sharp-tailed Sparrow": "Ammodramus nelsoni",  # Nelson's Sparrow since the 2009 split
    "White-breasted Kingfisher": "Halcyon smyrnensis",  # White-throated Kingfisher
}
# CUB classes that are a genus, not a species: CUB name -> genus.
GENERA = {"Frigatebird": "Fregata", "Nighthawk": "Chordeiles", "Sayornis": "Sayornis", "Geococcyx": "Geococcyx"}


@dataclass(frozen=True)
class Match:
    cub_id: int
    cub_name: str
    level: str  # "species", "genus" or "none"
    inat_labels: tuple[str, ...]
    how: str


def normalise(name: str) -> str:
    """A common name reduced to lower-case letters: "Brewer's Blackbird" and "Brewer Blackbird" agree."""
    name = name.lower().replace("'s ", " ").replace("grey", "gray")
    return re.sub(r"[^a-z]", "", name)


def split_label(label: str) -> tuple[str, str]:
    """`Cardinalis cardinalis (Northern Cardinal)` -> (scientific name, common name)."""
    found = re.fullmatch(r"(.+?) \((.+)\)", label.strip())
    return (found.group(1), found.group(2)) if found else (label.strip(), "")


def common_name_first(label: str) -> str:
    """`Cardinalis cardinalis (Northern Cardinal)` -> `Northern Cardinal (Cardinalis cardinalis)`; other labels
    (`background`, ImageNet's) unchanged."""
    scientific, common = split_label(label)
    return f"{common} ({scientific})" if common else label


def build_map(labels: list[str], cub_classes: list[tuple[int, str]]) -> list[Match]:
    """The map from the iNat labels (in output order) and CUB's `(class id, readable name)` list."""
    by_name: dict[str, list[str]] = {}
    by_scientific: dict[str, str] = {}
    for label in labels:
        scientific, common = split_label(label)
        if not common:
            continue  # "background"
        by_scientific[scientific] = label
        # "Forster's Tern" is "Forsters Tern" in CUB, "Brewer's Blackbird" is "Brewer Blackbird": both keys.
        for key in {normalise(common), normalise(common.replace("'", ""))}:
            by_name.setdefault(key, []).append(label)
    matches = []
    for cub_id, name in cub_classes:
        if name in GENERA:
            found = tuple(lab for sci, lab in by_scientific.items() if sci.split()[0] == GENERA[name])
            matches.append(Match(cub_id, name, "genus" if found else "none", found, "genus" if found else ""))
        elif name in RENAMES:
            matches.append(Match(cub_id, name, "species", (by_scientific[RENAMES[name]],), "renamed"))
        elif normalise(name) in by_name:
            matches.append(Match(cub_id, name, "species", tuple(by_name[normalise(name)]), "name"))
        else:
            matches.append(Match(cub_id, name, "none", (), ""))
    return matches


def write_map(matches: list[Match], path: Path = MAP_FILE) -> None:
    """The map as TSV, written whole or not at all."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(FIELDS)
    for m in matches:
        writer.writerow([m.cub_id, m.cub_name, m.level, SEPARATOR.join(m.inat_labels), m.how])
    write_atomically(path, text.getvalue())


def read_map(path: Path = MAP_FILE) -> dict[str, Match]:
    """The committed map, by CUB class name (as `data.cub.readable_class_name` writes it); a ValueError naming
    the file and line of a row that is not a valid match."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path}:1: the header must be {', '.join(FIELDS)}")
        known = {}
        for line, row in enumerate(reader, 2):
            labels = tuple(row["inat_labels"].split(SEPARATOR)) if row.get("inat_labels") else ()
            if not (row.get("cub_id") or "").isdigit() or row.get("level") not in LEVELS or not row.get("cub_name"):
                raise ValueError(f"{path}:{line}: not a row of cub_id, name, level ({'/'.join(LEVELS)}), labels, how")
            if (row["level"] == "none") != (not labels):
                raise ValueError(f"{path}:{line}: level {row['level']} with {len(labels)} labels")
            known[row["cub_name"]] = Match(int(row["cub_id"]), row["cub_name"], row["level"], labels, row["how"])
    return known


def output_rows(class_names: list[str], labels: list[str]) -> list[list[int]]:
    """For each class name, the indices of the model outputs (`labels`, in output order) that are that class;
    empty for a class the map does not know or does not match."""
    known = read_map()
    index = {label: i for i, label in enumerate(labels)}
    rows = []
    for name in class_names:
        match = known.get(name)
        rows.append([index[lab] for lab in match.inat_labels if lab in index] if match else [])
    return rows


def species_rows(head: torch.nn.Module, labels: list[str] | None, class_names: list[str]) -> list[list[int]] | None:
    """Per class name, the outputs of a pretrained `head` with output names `labels` that are that species
    (this map), or None when the start brings no labels or none of the classes is in it."""
    if labels is None or not isinstance(head, torch.nn.Linear):
        return None
    rows = output_rows(class_names, labels)
    used = {labels[i] for row in rows for i in row}
    twice = sorted(label for label in used if labels.count(label) > 1)
    if twice:
        raise ValueError(f"the label {twice[0]!r} names {labels.count(twice[0])} outputs: which one is the species?")
    return rows if any(rows) else None


def main(argv: list[str] | None = None) -> None:
    from data.cub import readable_class_name

    p = argparse.ArgumentParser(description="Rewrite data/cub200_inat_birds.tsv.")
    p.add_argument("labels", help="inat_bird_labels.txt (one label per model output)")
    p.add_argument("classes", help="CUB-200's full classes.txt")
    args = p.parse_args(argv)
    labels = _text_lines(args.labels)
    if not any(split_label(label)[1] for label in labels):
        raise UsageError(f"{args.labels}: no label of the form 'Scientific name (Common Name)'")
    cub = []
    for number, line in enumerate(_text_lines(args.classes), 1):
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise UsageError(f"{args.classes}:{number}: expected 'ID NNN.Folder_Name', got {line.strip()[:60]!r}")
        cub.append((int(fields[0]), readable_class_name(fields[1])))
    if sorted(i for i, _ in cub) != list(range(1, CUB_CLASSES + 1)):
        raise UsageError(f"{args.classes}: not CUB-200's full classes.txt (ids 1-{CUB_CLASSES} once each)")
    missing = sorted(
        name for name, scientific in RENAMES.items() if not any(split_label(x)[0] == scientific for x in labels)
    )
    if missing:
        raise UsageError(
            f"{args.labels}: no {RENAMES[missing[0]]!r}, which {missing[0]} is renamed to: not the iNat labels"
        )
    matches = build_map(labels, cub)
    write_map(matches)
    counts = {level: sum(m.level == level for m in matches) for level in ("species", "genus", "none")}
    print(f"wrote {MAP_FILE}: {counts}")


def _text_lines(path: str) -> list[str]:
    """The non-empty lines of a UTF-8 text file; UsageError naming it otherwise."""
    try:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte {e.start})") from None


if __name__ == "__main__":
    run("data.species_map", main)
