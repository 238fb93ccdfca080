"""bioaug.evaluate.splits: folds and budget draws that belong to the slides, not to a store."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bioaug.errors import BioaugError, ConfigError
from bioaug.evaluate import Splits, check_disjoint_groups, validation_split


def _patches(n_groups: int, per_group: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and slide names where each slide holds a random mix of classes."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"slide{g}" for g in range(n_groups)], per_group).astype(object)
    return rng.integers(0, n_classes, n_groups * per_group), groups


def _splits(labels, groups, folds=5, seed=0, draws=(0,), policy="random") -> Splits:
    return Splits.make(groups, labels, folds=folds, seed=seed, group_by="slide", draws=draws, draw_policy=policy)


@pytest.mark.parametrize("n_groups, per_group, n_classes, n_folds", [
    (6, 10, 3, 2), (10, 7, 4, 5), (5, 3, 2, 5), (12, 20, 6, 3)])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_folds_never_share_a_slide_and_test_every_patch_once(n_groups, per_group, n_classes, n_folds, seed):
    labels, groups = _patches(n_groups, per_group, n_classes, seed)
    splits = _splits(labels, groups, n_folds, seed)
    folds = [splits.fold_indices(groups, k) for k in range(n_folds)]
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(labels)))
    sizes = [len(set(groups[test])) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        fit, val = validation_split(labels, groups, train, 0.25, seed)
        assert sorted(np.concatenate([fit, val])) == sorted(train)
        assert len(val) and not set(groups[fit]) & set(groups[val])


def test_two_stores_of_the_same_slides_get_the_same_folds_and_budgets():
    """The store-dependent split of old (StratifiedGroupKFold on per-image class counts) failed this."""
    names = [f"img{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    # store A: many small patches; store B: other patch counts and labels per slide (another view or detector)
    groups_a = np.repeat(names, rng.integers(5, 40, len(names))).astype(object)
    groups_b = np.repeat(names[::-1], rng.integers(1, 9, len(names))).astype(object)
    a = _splits(rng.integers(0, 4, len(groups_a)), groups_a, seed=3, draws=(0, 1))
    b = _splits(rng.integers(0, 4, len(groups_b)), groups_b, seed=3, draws=(0, 1))
    assert a.fold_of == b.fold_of
    for fold in range(5):
        assert set(groups_a[a.fold_indices(groups_a, fold)[1]]) == set(groups_b[b.fold_indices(groups_b, fold)[1]])
        for draw in (0, 1):
            assert a.budget_groups(fold, draw, 0.1) == b.budget_groups(fold, draw, 0.1)
    assert a.fold_of != _splits(np.zeros(len(groups_a), int), groups_a, seed=4).fold_of  # the seed matters


@pytest.mark.parametrize("n_slides, fraction, expected", [
    (10, 0.1, 1), (10, 0.25, 2), (10, 1.0, 10), (20, 0.25, 5), (3, 0.1, 1), (8, 0.5, 4)])
def test_a_budget_keeps_the_right_number_of_whole_slides(n_slides, fraction, expected):
    groups = np.repeat([f"s{i}" for i in range(n_slides + 1)], 3).astype(object)
    splits = _splits(np.zeros(len(groups), int), groups, folds=n_slides + 1, draws=(0, 1, 2))  # 1 test slide
    for draw in range(3):
        chosen = splits.budget_indices(groups, 0, draw, fraction)
        assert len(set(groups[chosen])) == expected
        assert set(groups[chosen]) == set(splits.budget_groups(0, draw, fraction))  # every patch of those slides
        assert not set(groups[chosen]) & set(groups[splits.fold_indices(groups, 0)[1]])


def test_budgets_are_nested_within_a_draw_and_draws_differ():
    groups = np.array([f"s{i}" for i in range(40)], dtype=object)
    splits = _splits(np.zeros(40, int), groups, draws=(0, 1))
    for draw in (0, 1):
        small, large = splits.budget_groups(0, draw, 0.1), splits.budget_groups(0, draw, 0.5)
        assert set(small) <= set(large)
    assert splits.budget_groups(0, 0, 0.25) != splits.budget_groups(0, 1, 0.25)
    for fraction in (0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match="budget"):
            splits.budget_groups(0, 0, fraction)


def test_every_class_draws_hold_every_class_in_their_first_slides():
    # 20 slides of one class each except four slides that show the rare class 3
    groups = np.array([f"s{i:02d}" for i in range(24)], dtype=object)
    labels = np.array([i % 3 for i in range(20)] + [3] * 4)
    for draw in range(5):
        every = _splits(labels, groups, folds=4, draws=(draw,), policy="every_class")
        first = every.budget_groups(0, draw, 4 / 18)
        assert len(first) == 4
        assert {labels[list(groups).index(name)] for name in first} == {0, 1, 2, 3}
    random = _splits(labels, groups, folds=4, draws=range(5))
    assert any({labels[list(groups).index(n)] for n in random.budget_groups(0, d, 4 / 18)} != {0, 1, 2, 3}
               for d in range(5))


def test_a_saved_split_round_trips_and_refuses_other_slides(tmp_path):
    labels, groups = _patches(12, 4, 3, 0)
    splits = _splits(labels, groups, folds=3, draws=(0, 2))
    path = tmp_path / "splits.json"
    splits.save(path)
    loaded = Splits.load(path)
    assert loaded == splits
    loaded.check(groups, "store", path, folds=3, draws=[0, 2], group_by="slide")
    with pytest.raises(ConfigError, match="1 slide\\(s\\) of store-b are not in the split \\(e.g. new\\)") as error:
        loaded.check(np.append(groups, "new"), "store-b", path, folds=3, draws=[0], group_by="slide")
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    with pytest.raises(ConfigError, match="of the split are not in store-c"):
        loaded.check(groups[groups != "slide0"], "store-c", path, folds=3, draws=[0], group_by="slide")
    with pytest.raises(ConfigError, match="3 folds by slide, the config asks for 5"):
        loaded.check(groups, "store", path, folds=5, draws=[0], group_by="slide")
    with pytest.raises(ConfigError, match="draws \\[0, 2\\], not 1"):
        loaded.check(groups, "store", path, folds=3, draws=[1], group_by="slide")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 1, "folds": 3}))
    with pytest.raises(ConfigError, match="not a bioaug split file"):
        Splits.load(tmp_path / "bad.json")


def test_too_many_folds_and_shared_slides_are_refused():
    labels, groups = _patches(4, 2, 2, 0)
    with pytest.raises(ConfigError, match=r"^--folds: need 2 <= folds <= number of slides/groups \(4\), got 5$"):
        _splits(labels, groups, folds=5)
    with pytest.raises(BioaugError, match=r"^split: 1 group\(s\) on both sides, e\.g\. slide1$"):
        check_disjoint_groups(groups, np.array([2, 3]), np.array([3, 4]))
