"""The train/val/test split: seeded, stratified, disjoint, the same on any machine."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.data.datamodule import stratified_split, stratified_subset
from catdog.errors import UserError


def test_same_seed_same_split_other_seed_other_split():
    labels = np.array([0] * 300 + [1] * 100)
    a = stratified_split(labels, 0.2, 0.1, seed=7)
    b = stratified_split(labels, 0.2, 0.1, seed=7)
    c = stratified_split(labels, 0.2, 0.1, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_split_is_pinned_across_machines_and_versions():
    # numpy's PCG64 stream is specified: these indices must never change for seed 42.
    train, val, test = stratified_split(np.array([0, 1] * 10), 0.2, 0.1, seed=42)
    assert val.tolist() == [9, 10, 12, 17] and test.tolist() == [0, 5]


def test_stratified_disjoint_and_complete():
    labels = np.array([0] * 300 + [1] * 100)
    train, val, test = stratified_split(labels, 0.2, 0.1, seed=0)
    assert len(set(train) | set(val) | set(test)) == 400
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert (labels[val] == 0).sum() == 60 and (labels[val] == 1).sum() == 20
    assert (labels[test] == 0).sum() == 30 and (labels[test] == 1).sum() == 10


@pytest.mark.parametrize("val, test", [(1.0, 0.0), (0.6, 0.5), (-0.1, 0.0)])
def test_bad_fractions_are_a_user_error(val, test):
    with pytest.raises(UserError, match="val_fraction"):
        stratified_split(np.array([0, 1] * 5), val, test, seed=0)


def test_train_limit_subsets_are_class_balanced_and_nested():
    labels = np.array([0] * 300 + [1] * 100)
    train, _, _ = stratified_split(labels, 0.2, 0.0, seed=0)
    small, large = (stratified_subset(labels, train, n, seed=0) for n in (40, 160))
    assert len(small) == 40 and len(large) == 160
    assert (labels[small] == 1).sum() == 10 and (labels[large] == 1).sum() == 40  # a quarter, as in train
    assert set(small) <= set(large) <= set(train)  # a learning curve's points differ only by added photos


def test_train_limit_keeps_every_class_with_uneven_shares():
    labels = np.array([0] * 7 + [1] * 3)
    subset = stratified_subset(labels, np.arange(10), 5, seed=0)
    assert len(subset) == 5 and set(labels[subset]) == {0, 1}


@pytest.mark.parametrize("n", [1, 321])
def test_train_limit_out_of_range_is_a_user_error(n):
    labels = np.array([0] * 300 + [1] * 100)
    train, _, _ = stratified_split(labels, 0.2, 0.0, seed=0)
    with pytest.raises(UserError, match="train_limit"):
        stratified_subset(labels, train, n, seed=0)


def test_train_limit_trains_on_fewer_images_and_validates_on_the_same(synthetic_root, tmp_path):
    from hydra.utils import instantiate

    from helpers import TINY, compose_train

    def splits(*overrides):
        dm = instantiate(compose_train(tmp_path, [f"data.root={synthetic_root}", *TINY, *overrides]).data)
        dm.prepare_data()
        dm.setup("fit")
        return dm.splits, sum(len(labels) for _, labels in dm.train_dataloader())

    full, _ = splits()
    limited, served = splits("data.train_limit=32")
    assert np.array_equal(limited["val"], full["val"]) and set(limited["train"]) < set(full["train"])
    assert len(limited["train"]) == 32 and served == 32  # two batches of 16


def test_no_validation_images_or_no_batch_is_one_line(synthetic_root, tmp_path):
    from catdog.data.datamodule import CatDogDataModule

    for size in (0, -5, 2.5):
        with pytest.raises(UserError, match=f"data.batch_size={size} must be a whole number of images, at least 1"):
            CatDogDataModule(root=str(synthetic_root), batch_size=size)
    module = CatDogDataModule(root=str(synthetic_root), image_size=32, val_fraction=0, cache="off", cache_dir=str(tmp_path))
    module.prepare_data()
    with pytest.raises(UserError, match="data.val_fraction=0 leaves no validation images"):
        module.setup("fit")
