"""Oxford-IIIT Pet read as it ships: ``images/`` and ``annotations/`` (Parkhi et al. 2012).

- Labels come from the species column of the annotation lists (``trainval.txt``, ``test.txt``,
  ``list.txt``: ``Image CLASS-ID SPECIES BREED-ID``, species 1 = cat, 2 = dog), not from the
  breed names, whose capitalisation only hints at the species.
- ``annotations/trimaps/<name>.png`` is the animal mask (1 animal, 2 background, 3 the
  uncertain band along the animal's outline); ``annotations/xmls/<name>.xml`` the head box
  (PASCAL VOC), present for most images only.
- The data set's quirks are reported, never fatal: ``.mat`` files among the images, listed
  images that are missing, images no list names, masks or head boxes that are missing or do not
  parse. A GIF or PNG named ``.jpg`` decodes as what it is (``catdog.data.decode``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from catdog.data.files import FileList, is_image_name
from catdog.errors import UserError

SPECIES = {"1": "cat", "2": "dog"}
CLASSES = ["cat", "dog"]
LISTS = ("trainval.txt", "test.txt", "list.txt")
BACKGROUND = 2  # trimap value; 1 (animal) and 3 (the band along its outline) both count as animal


def is_oxford_pets(root: Path) -> bool:
    """The data set's own layout: ``images/`` beside ``annotations/`` with an annotation list."""
    return (root / "images").is_dir() and any((root / "annotations" / name).is_file() for name in LISTS)


def read_species(root: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Image name (no suffix) -> cat or dog from every annotation list present; odd lines reported."""
    species, odd = {}, []
    for name in LISTS:
        path = root / "annotations" / name
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):  # list.txt opens with comment lines
                continue
            if len(fields) < 3 or fields[2] not in SPECIES:
                odd.append((f"{path}:{n}", f"annotation line not understood: {line.strip()[:60]!r}"))
                continue
            species[fields[0]] = SPECIES[fields[2]]
    return species, odd


def find_oxford_pets(root: Path) -> FileList:
    """The labelled images of an Oxford-IIIT Pet folder; what cannot be used is in ``ignored``."""
    species, ignored = read_species(root)
    paths, labels, found = [], [], set()
    for entry in sorted((root / "images").iterdir()):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if not is_image_name(entry):  # the data set ships .mat files among its images
            ignored.append((str(entry), "not an image file name"))
        elif entry.stem not in species:
            ignored.append((str(entry), "not named in annotations/ (trainval.txt, test.txt, list.txt): no label"))
        else:
            paths.append(str(entry))
            labels.append(CLASSES.index(species[entry.stem]))
            found.add(entry.stem)
    ignored += [(str(root / "images" / f"{stem}.jpg"), "named in annotations/ but missing")
                for stem in sorted(set(species) - found)]
    if not paths:
        raise UserError(f"{root} looks like Oxford-IIIT Pet (images/, annotations/) but none of its images is "
                        "named in annotations/trainval.txt, test.txt or list.txt")
    return FileList(paths, labels, list(CLASSES), "oxford-pets", ignored)


# --- the annotations a probe set needs ---------------------------------------------------------


@dataclass
class Annotations:
    """Per image: the animal mask (bool, S x S) or None, the head box as fractions or None."""

    mask: np.ndarray | None
    head: tuple[float, float, float, float] | None
    problems: list[str]


def read_mask(path: Path, size: int) -> np.ndarray:
    """The trimap resized to ``size`` x ``size`` as the images are (squashed), nearest neighbour
    so labels are never blended; True where the animal (or its outline band) is."""
    with Image.open(path) as trimap:
        values = np.asarray(trimap.convert("L").resize((size, size), Image.NEAREST))
    return values != BACKGROUND


def read_head_box(path: Path) -> tuple[float, float, float, float]:
    """The first object's box of a PASCAL VOC file as (x0, y0, x1, y1) fractions of the image."""
    tree = ET.parse(path)
    width, height = float(tree.findtext("size/width")), float(tree.findtext("size/height"))
    box = tree.find("object/bndbox")
    x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    # VOC coordinates are 1-based and inclusive: pixel x covers [x - 1, x).
    return (x0 - 1) / width, (y0 - 1) / height, x1 / width, y1 / height


def read_annotations(root: Path, image_path: str, size: int) -> Annotations:
    stem, problems = Path(image_path).stem, []
    mask = head = None
    trimap, xml = root / "annotations" / "trimaps" / f"{stem}.png", root / "annotations" / "xmls" / f"{stem}.xml"
    try:
        mask = read_mask(trimap, size)
    except FileNotFoundError:
        problems.append("no trimap (animal mask)")
    except Exception as err:  # a damaged mask costs only this image its mask
        problems.append(f"trimap unreadable: {type(err).__name__}: {err}")
    if xml.is_file():
        try:
            head = read_head_box(xml)
        except Exception as err:
            problems.append(f"head box unreadable: {type(err).__name__}: {err}")
    return Annotations(mask, head, problems)
