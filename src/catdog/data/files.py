"""Find the images under a folder, in either labelled layout, and check each file once.

Layouts, detected automatically:
- Kaggle's flat folder: ``cat.0.jpg``, ``dog.12.jpg`` ... the label is the name's prefix;
- class sub-folders, as torchvision's ImageFolder reads them: ``cat/``, ``dog/`` or
  Microsoft's ``PetImages/Cat``, ``PetImages/Dog``;
- Oxford-IIIT Pet as it ships: ``images/`` and ``annotations/``, labelled by species
  (``catdog.data.oxford_pets``).
Class names are lower-cased and sorted, so cat=0 and dog=1 (Kaggle's "1 = dog").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from catdog.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_KAGGLE_NAME = re.compile(r"^(?P<label>[A-Za-z]+)\.[^/]*$")


@dataclass
class FileList:
    """Image paths with their labels (``-1`` when unlabelled), and what was left out and why."""

    paths: list[str]
    labels: list[int]
    classes: list[str]
    layout: str
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _list_dir(root: Path) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    """Image files and sub-folders of ``root``, and the image-like entries set aside, with why."""
    files, dirs, ignored = [], [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):  # .DS_Store, .git: passed over; a hidden image is reported
            if is_image_name(entry):
                ignored.append((str(entry), "hidden file"))
        elif entry.is_dir() and entry.is_symlink():  # never followed: a link to a parent would loop
            ignored.append((str(entry), "link to a folder, not followed"))
        elif entry.is_dir():
            if is_image_name(entry):
                ignored.append((str(entry), "a folder named like an image"))
            else:
                dirs.append(entry)
        elif is_image_name(entry):
            files.append(entry)
        # Other files (boxes.csv, Thumbs.db, notes) are passed over silently, as ImageFolder does.
    return files, dirs, ignored


def _walk_images(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every image file below ``folder`` (ImageFolder reads class folders recursively)."""
    files, dirs, ignored = _list_dir(folder)
    for sub in dirs:
        more, more_ignored = _walk_images(sub)
        files += more
        ignored += more_ignored
    return files, ignored


def require_folder(root: str | os.PathLike | None, what: str) -> Path:
    if root is None or str(root) in ("", "???"):
        raise UserError(f"{what} is not set: add {what}=/path/to/images to the command line")
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"{what}={root} does not exist: point it at a folder of images")
    if not path.is_dir():
        raise UserError(f"{what}={root} is a file, not a folder of images")
    return path


def _classes_and_labels(names: list[str], root: Path, hint: str) -> tuple[list[str], list[int]]:
    classes = sorted({n.lower() for n in names})
    if len(classes) < 2:
        found = classes[0] if classes else "none"
        raise UserError(f"only one class ({found}) found in {root}: {hint}")
    index = {c: i for i, c in enumerate(classes)}
    return classes, [index[n.lower()] for n in names]


def _kaggle_flat(root: Path, files: list[Path], ignored: list) -> FileList:
    names, unlabelled = [], []
    for f in files:
        match = _KAGGLE_NAME.match(f.name)
        (names if match else unlabelled).append(match["label"] if match else f.name)
    if unlabelled:
        example = unlabelled[0]
        if root.name == "images" and (root.parent / "annotations").is_dir():  # Oxford-IIIT Pet's, one level too deep
            raise UserError(f"{root} looks like Oxford-IIIT Pet's images/: point data.root at {root.parent}, "
                            "whose annotations/ label them")
        raise UserError(
            f"{root} has {len(unlabelled)} images like '{example}' whose class is neither a name prefix "
            "(Kaggle's cat.N.jpg) nor a sub-folder (cat/, dog/); for unlabelled images such as "
            "Kaggle's test1/, use src/predict.py"
        )
    classes, labels = _classes_and_labels(names, root, "Kaggle's layout needs both cat.N.jpg and dog.N.jpg files")
    return FileList([str(f) for f in files], labels, classes, "kaggle-flat", ignored)


def _class_folders(root: Path, dirs: list[Path], ignored: list) -> FileList:
    paths, names = [], []
    for d in dirs:
        files, more_ignored = _walk_images(d)
        ignored += more_ignored
        paths += [str(f) for f in files]
        names += [d.name] * len(files)
    if not paths:
        raise UserError(f"no images found in {root} or its sub-folders ({', '.join(d.name for d in dirs)})")
    classes, labels = _classes_and_labels(names, root, "class sub-folders need at least two classes, e.g. cat/ and dog/")
    return FileList(paths, labels, classes, "class-folders", ignored)


def labelled_subfolder(root: str | os.PathLike, classes: list[str], peek: int = 50) -> Path | None:
    """The first sub-folder of ``root`` that looks like a labelled folder of ``classes`` itself (Kaggle's
    cat.N.jpg, or cat/ and dog/ in it): where ``data.root`` was meant to point, one level too high."""
    for sub in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        try:
            with os.scandir(sub) as entries:
                for _, entry in zip(range(peek), entries):
                    match = _KAGGLE_NAME.match(entry.name)
                    if (match and match["label"].lower() in classes) or (entry.is_dir() and entry.name.lower() in classes):
                        return sub
        except OSError:
            continue
    return None


def find_labelled(root: str | os.PathLike | None, what: str = "data.root") -> FileList:
    """Labelled images under ``root`` in whichever layout it uses; clear errors otherwise."""
    from catdog.data.oxford_pets import find_oxford_pets, is_oxford_pets  # it reads FileList from here

    path = require_folder(root, what)
    if is_oxford_pets(path):
        return find_oxford_pets(path)
    files, dirs, ignored = _list_dir(path)
    if files:  # images at the top: Kaggle's flat layout (extra folders are not classes then)
        ignored += [(str(d), "folder beside Kaggle-style files") for d in dirs]
        return _kaggle_flat(path, files, ignored)
    if dirs:
        return _class_folders(path, dirs, ignored)
    raise UserError(f"no images found in {what}={root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")


def find_unlabelled(root: str | os.PathLike | None, what: str = "data.root") -> FileList:
    """Every image under ``root`` (e.g. Kaggle's test1/), sorted by numeric id where names are numbers."""
    path = Path(root) if root is not None else None
    if path is not None and path.is_file():
        files, ignored = ([path], []) if is_image_name(path) else ([], [(str(path), "not an image file name")])
    else:
        files, ignored = _walk_images(require_folder(root, what))
    if not files:
        raise UserError(f"no images found in {what}={root}")
    files.sort(key=_natural_key)
    return FileList([str(f) for f in files], [-1] * len(files), [], "unlabelled", ignored)


def _natural_key(path: Path) -> tuple:
    """Sort ``2.jpg`` before ``10.jpg``: Kaggle's submission rows go by numeric id."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path)))
