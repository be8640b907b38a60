"""Finding labelled and unlabelled images in both layouts, and the errors a user can cause."""

from __future__ import annotations

import os

import pytest

from catdog.data.files import find_labelled, find_unlabelled
from catdog.errors import UserError
from helpers import write_image


def test_kaggle_flat_layout_labels_by_prefix(tmp_path):
    for name in ["dog.1.jpg", "cat.0.jpg", "cat.10.jpg", "dog.2.jpg"]:
        write_image(tmp_path / name)
    files = find_labelled(tmp_path)
    assert files.layout == "kaggle-flat"
    assert files.classes == ["cat", "dog"]
    assert {os.path.basename(p): y for p, y in zip(files.paths, files.labels)} == {
        "cat.0.jpg": 0, "cat.10.jpg": 0, "dog.1.jpg": 1, "dog.2.jpg": 1}


def test_class_folders_including_petimages_capitals_and_nesting(tmp_path):
    write_image(tmp_path / "PetImages" / "Dog" / "1.jpg")
    write_image(tmp_path / "PetImages" / "Dog" / "more" / "2.jpg")
    write_image(tmp_path / "PetImages" / "Cat" / "1.jpg")
    (tmp_path / "PetImages" / "Cat" / "Thumbs.db").write_bytes(b"not an image")
    files = find_labelled(tmp_path / "PetImages")
    assert files.layout == "class-folders"
    assert files.classes == ["cat", "dog"]  # lower-cased, alphabetical: cat=0, dog=1 like Kaggle
    labels = {p.split("PetImages/")[1]: y for p, y in zip(files.paths, files.labels)}
    assert labels == {"Cat/1.jpg": 0, "Dog/1.jpg": 1, "Dog/more/2.jpg": 1}
    assert not any("Thumbs.db" in p for p in files.paths)


def test_odd_entries_are_set_aside_with_a_reason(tmp_path):
    write_image(tmp_path / "cat" / "a.jpg")
    write_image(tmp_path / "dog" / "b.jpg")
    write_image(tmp_path / "dog" / ".hidden.jpg")
    (tmp_path / "dog" / "x.jpg").mkdir()  # a folder named like an image
    os.symlink(tmp_path, tmp_path / "dog" / "loop")  # would recurse forever if followed
    files = find_labelled(tmp_path)
    assert len(files.paths) == 2
    reasons = {os.path.basename(p): r for p, r in files.ignored}
    assert reasons[".hidden.jpg"].startswith("hidden")
    assert "folder" in reasons["x.jpg"]
    assert "not followed" in reasons["loop"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: write_image(root / "cat.1.jpg"), "is a file"),
        (lambda root: root, "no images found"),
        (lambda root: [write_image(root / f"cat.{i}.jpg") for i in range(3)] and root, "only one class (cat)"),
        (lambda root: [write_image(root / "cat" / "1.jpg")] and root, "only one class (cat)"),
        (lambda root: [write_image(root / f"{i}.jpg") for i in range(3)] and root, "neither a name prefix"),
        (lambda root: (root / "cat").mkdir() or (root / "dog").mkdir() or root, "no images found"),
    ],
    ids=["missing", "a-file", "empty", "one-class-flat", "one-class-folders", "unlabelled-test1", "empty-class-folders"],
)
def test_user_errors_are_one_clear_line(tmp_path, make, message):
    with pytest.raises(UserError) as err:
        find_labelled(make(tmp_path))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unset_root_says_how_to_set_it():
    with pytest.raises(UserError, match="data.root is not set"):
        find_labelled(None)


def test_unlabelled_sorted_by_numeric_id(tmp_path):
    for i in [10, 2, 1]:
        write_image(tmp_path / f"{i}.jpg")
    files = find_unlabelled(tmp_path)
    assert [os.path.basename(p) for p in files.paths] == ["1.jpg", "2.jpg", "10.jpg"]
    assert find_unlabelled(tmp_path / "2.jpg").paths == [str(tmp_path / "2.jpg")]


def test_real_kaggle_sample_layout(kaggle_sample):
    files = find_labelled(kaggle_sample / "train")
    assert files.layout == "kaggle-flat"
    assert files.classes == ["cat", "dog"]
    assert len(files.paths) == 4000 and sum(files.labels) == 2000
    assert all(("/dog." in p) == (y == 1) for p, y in zip(files.paths, files.labels))
    with pytest.raises(UserError, match="predict.py"):
        find_labelled(kaggle_sample / "test1")
    assert len(find_unlabelled(kaggle_sample / "test1").paths) == 500


def test_a_root_one_level_above_the_photos_names_the_folder_meant(tmp_path):
    from catdog.data.datamodule import CatDogDataModule
    from catdog.data.files import labelled_subfolder

    for name in ("cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"):
        write_image(tmp_path / "kaggle" / "train" / name)
    write_image(tmp_path / "kaggle" / "test1" / "1.jpg")  # unlabelled, as Kaggle ships it
    write_image(tmp_path / "nested" / "photos" / "cat" / "a.jpg")
    assert labelled_subfolder(tmp_path / "kaggle", ["cat", "dog"]) == tmp_path / "kaggle" / "train"
    assert labelled_subfolder(tmp_path / "nested", ["cat", "dog"]) == tmp_path / "nested" / "photos"
    assert labelled_subfolder(tmp_path / "kaggle" / "train", ["cat", "dog"]) is None  # no sub-folders

    module = CatDogDataModule(root=str(tmp_path / "kaggle"), image_size=32, cache="off", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match=f"did you mean data.root={tmp_path / 'kaggle' / 'train'}\\?$"):
        module.prepare_data()
