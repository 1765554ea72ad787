"""Where each bird class sits in the tree of life: genus, family and order, for the answer at the level a model is
sure of (`deploy.answer`).

Two sources, both data:
- CUB-200's 200 classes: `data/cub200_taxonomy.tsv`, one row per class: its id and name, `level` (`species`, or
  `genus` for the 4 classes CUB defines as a genus: Frigatebird, Nighthawk, Sayornis, Geococcyx), the scientific
  name, genus, family and order. Source: the Wikispecies-based CUB hierarchy of Barz and Denzler ("Deep Learning
  on Small Datasets without Pre-Training using Cosine Loss", WACV 2020; github.com/cvjena/semantic-embeddings,
  `CUB-Hierarchy/hierarchy_flat.txt`, MIT licence), which also names the 26 species Google's bird file does not
  have; `note` gives the iNaturalist 2017 name where the bird file calls the species otherwise (10 rows).
- the iNaturalist-birds file's 964 labels, `Scientific name (Common Name)`: the genus is the first word of the
  scientific name, its family and order from `data/inat_bird_families.tsv` (one row per genus of the file, 439:
  the eBird/Clements taxonomy of August 2017, the iNaturalist 2017 competition's year, as published in
  github.com/CornellLabofOrnithology/auk, `data-raw/eBird_Taxonomy_v2017_18Aug2017.csv`; `note` where the file's
  genus is not eBird's: Chen, which eBird puts in Anser).
"""

import csv
import re
from dataclasses import dataclass
from pathlib import Path

TAXONOMY_FILE = Path(__file__).resolve().parent / "cub200_taxonomy.tsv"
FAMILIES_FILE = Path(__file__).resolve().parent / "inat_bird_families.tsv"
FIELDS = ("cub_id", "cub_name", "level", "scientific_name", "genus", "family", "order", "note")
LEVELS = ("species", "genus", "family")  # the answer's levels, finest first


@dataclass(frozen=True)
class Taxon:
    """One class: its scientific name and the groups above it (None where unknown)."""

    scientific_name: str
    genus: str
    family: str | None = None
    order: str | None = None


def cub_taxa() -> dict[str, Taxon]:
    """The committed CUB taxonomy, by CUB class name (as `data.cub.readable_class_name` writes it); ValueError
    naming the file's line for a malformed row."""
    taxa = {}
    with open(TAXONOMY_FILE, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{TAXONOMY_FILE}:1: expected the columns {', '.join(FIELDS)}")
        for number, row in enumerate(reader, 2):
            if not all(row[k] for k in FIELDS[:7]) or row["level"] not in ("species", "genus"):
                raise ValueError(f"{TAXONOMY_FILE}:{number}: a row needs every field up to order and a level")
            taxa[row["cub_name"]] = Taxon(row["scientific_name"], row["genus"], row["family"], row["order"])
    return taxa


def _is_scientific(name: str) -> bool:
    """A binomial (or trinomial, or a hybrid `Genus a × b`): a capitalised genus, then lowercase epithets."""
    words = [w for w in name.split() if w not in ("×", "\\xd7")]  # the labels file writes × as an escape
    return (
        len(words) >= 2
        and words[0].isalpha()
        and words[0][0].isupper()
        and all(re.fullmatch(r"[a-z-]+", w) for w in words[1:])
    )


def inat_taxon(label: str, families: dict[str, tuple[str, str]] | None = None) -> Taxon | None:
    """The taxon of an iNaturalist-birds label, `Scientific name (Common Name)` (or the other way round, as
    `data.species_map.common_name_first` writes it for people), its family and order from `families` (default:
    `inat_families()`, read here); None for a label without one (its background)."""
    head, _, rest = label.partition(" (")
    scientific = next((name for name in (head, rest.removesuffix(")")) if _is_scientific(name)), None)
    if scientific is None:
        return None
    genus = scientific.split()[0]
    family, order = (inat_families() if families is None else families).get(genus, (None, None))
    return Taxon(scientific, genus, family, order)


def inat_families() -> dict[str, tuple[str, str]]:
    """Genus -> (family, order) for the bird file's genera (`FAMILIES_FILE`)."""
    rows = csv.DictReader(FAMILIES_FILE.read_text(encoding="utf-8").splitlines(), delimiter="\t")
    return {row["genus"]: (row["family"], row["order"]) for row in rows}


def taxa_of(class_names: list[str]) -> list[Taxon | None]:
    """Each class's taxon: CUB's classes from the committed file, iNaturalist labels from their scientific
    names, None for a class neither names (a class of the generated birds, the background output)."""
    cub, families = cub_taxa(), inat_families()  # each file read once
    return [cub.get(name) or inat_taxon(name, families) for name in class_names]
