"""Oxford-IIIT Pet read as it ships: species labels, trimap masks, head boxes; quirks reported."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.data.files import find_labelled
from catdog.data.oxford_pets import read_annotations, read_head_box
from catdog.errors import UserError
from helpers import ROOT, write_oxford_pets

OXFORD_SAMPLE = ROOT.parent / "shared" / "data" / "oxford-pets-sample"


def test_labels_come_from_species_and_quirks_are_reported(tmp_path) -> None:
    root = write_oxford_pets(tmp_path / "pets")
    files = find_labelled(root)
    assert files.layout == "oxford-pets" and files.classes == ["cat", "dog"]
    named = dict(zip((p.rsplit("/", 1)[1] for p in files.paths), files.labels))
    assert named["Persian_1.jpg"] == 0 and named["beagle_1.jpg"] == 1 and len(named) == 8
    reasons = {p.rsplit("/", 1)[1]: r for p, r in files.ignored}
    assert reasons["Persian_1.mat"] == "not an image file name"
    assert "no label" in reasons["unlisted_1.jpg"]
    assert "missing" in reasons["missing_1.jpg"]


def test_mask_is_resized_like_the_image_and_head_box_is_fractions(tmp_path) -> None:
    root = write_oxford_pets(tmp_path / "pets", size=48)
    notes = read_annotations(root, str(root / "images" / "Persian_2.jpg"), 32)  # 56 x 48 px: the mask is squashed to 32 x 32 as the image is
    assert notes.mask.shape == (32, 32) and notes.mask.dtype == bool and not notes.problems
    assert 0.2 < notes.mask.mean() < 0.3  # half the width x half the height, outline band included
    x0, y0, x1, y1 = read_head_box(root / "annotations" / "xmls" / "Persian_1.xml")
    assert (x0, y0, x1, y1) == (0.0, 0.0, 12 / 48, 12 / 48)
    last = read_annotations(root, str(root / "images" / "beagle_4.jpg"), 32)
    assert last.head is None and last.mask is not None  # no head box: not a problem, the data set lacks some


def test_missing_or_damaged_annotations_are_problems_not_errors(tmp_path) -> None:
    root = write_oxford_pets(tmp_path / "pets")
    (root / "annotations" / "trimaps" / "Persian_1.png").unlink()
    (root / "annotations" / "xmls" / "Persian_2.xml").write_text("<annotation><size>")
    assert read_annotations(root, str(root / "images" / "Persian_1.jpg"), 16).problems == ["no trimap (animal mask)"]
    damaged = read_annotations(root, str(root / "images" / "Persian_2.jpg"), 16)
    assert damaged.head is None and "head box unreadable" in damaged.problems[0]


def test_a_folder_whose_list_names_none_of_its_images_is_one_user_error(tmp_path) -> None:
    root = write_oxford_pets(tmp_path / "pets")
    (root / "annotations" / "trainval.txt").write_text("# nothing\nnot_here 1 1 1\n")
    with pytest.raises(UserError, match="none of its images"):
        find_labelled(root)


def test_its_images_folder_given_as_the_root_names_the_parent(tmp_path) -> None:
    root = write_oxford_pets(tmp_path / "pets")
    with pytest.raises(UserError, match=f"looks like Oxford-IIIT Pet's images/: point data.root at {root}"):
        find_labelled(root / "images")


def test_eval_reads_an_oxford_folder(tmp_path, trained, capsys) -> None:
    from eval import evaluate
    from helpers import compose_train, read_csv

    root = write_oxford_pets(tmp_path / "pets")
    evaluate(compose_train(tmp_path, [f"ckpt_path={trained['ckpt']}", f"data.root={root}"], config_name="eval"))
    assert "oxford-pets, 8 images" in capsys.readouterr().out
    bad = read_csv(tmp_path / "run" / "bad_files.csv", records=True)
    assert {r["reason"] for r in bad} >= {"not an image file name", "named in annotations/ but missing"}


def test_real_sample(tmp_path) -> None:
    if not (OXFORD_SAMPLE / "annotations").is_dir():
        pytest.skip(f"the Oxford-IIIT Pet sample is not here ({OXFORD_SAMPLE}): it lives beside the project in ../shared")
    files = find_labelled(OXFORD_SAMPLE)
    assert len(files.paths) == 300 and sum(files.labels) == 100  # 200 cats, 100 dogs
    assert all(r == "not an image file name" for _, r in files.ignored)
    notes = read_annotations(OXFORD_SAMPLE, files.paths[0], 64)
    assert notes.mask is not None and notes.head is not None and 0.05 < np.mean(notes.mask) < 0.95
