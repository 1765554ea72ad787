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
import re
from dataclasses import dataclass
from pathlib import Path

MAP_FILE = Path(__file__).resolve().parent / "cub200_inat_birds.tsv"
FIELDS = ("cub_id", "cub_name", "level", "inat_labels", "how")
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
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(FIELDS)
        for m in matches:
            writer.writerow([m.cub_id, m.cub_name, m.level, SEPARATOR.join(m.inat_labels), m.how])


def read_map(path: Path = MAP_FILE) -> dict[str, Match]:
    """The committed map, by CUB class name (as `data.cub.readable_class_name` writes it)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {
        row["cub_name"]: Match(
            int(row["cub_id"]),
            row["cub_name"],
            row["level"],
            tuple(row["inat_labels"].split(SEPARATOR)) if row["inat_labels"] else (),
            row["how"],
        )
        for row in rows
    }


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


def main(argv: list[str] | None = None) -> None:
    from data.cub import readable_class_name

    p = argparse.ArgumentParser(description="Rewrite data/cub200_inat_birds.tsv.")
    p.add_argument("labels", help="inat_bird_labels.txt (one label per model output)")
    p.add_argument("classes", help="CUB-200's full classes.txt")
    args = p.parse_args(argv)
    labels = Path(args.labels).read_text(encoding="utf-8").splitlines()
    cub = []
    for line in Path(args.classes).read_text(encoding="utf-8").splitlines():
        if line.strip():
            cub_id, folder = line.split(maxsplit=1)
            cub.append((int(cub_id), readable_class_name(folder)))
    matches = build_map(labels, cub)
    write_map(matches)
    counts = {level: sum(m.level == level for m in matches) for level in ("species", "genus", "none")}
    print(f"wrote {MAP_FILE}: {counts}")


if __name__ == "__main__":
    main()
