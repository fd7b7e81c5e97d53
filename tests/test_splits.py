"""Splits of S simulations of T frames: by frames for one simulation, by simulation otherwise."""

from __future__ import annotations

import pytest

from meshsr.errors import InputError
from meshsr.learn.settings import FitSettings
from meshsr.learn.splits import Splits, make_splits, splits_for


@pytest.mark.parametrize("n_frames", [3, 5, 10, 48, 101])
def test_one_simulation_splits_by_frames_test_last_validation_before(n_frames):
    splits = make_splits(1, n_frames, (-1,))
    train, val, test = splits.train_frames(n_frames), splits.validation_frames, splits.test_frames
    assert splits.by_frames and (splits.train, splits.validation, splits.test) == ((0,), (), ())
    assert train + val + test == tuple(range(n_frames))  # contiguous, in this order, covering the run once
    assert len(test) == max(1, -(-n_frames // 5)) and len(val) == len(test)  # ceil(20 %), at least one frame
    assert [part for part, _ in splits.parts(0, n_frames)] == ["train", "validation", "test"]


def test_the_example_length_gives_twenty_percent_blocks():
    splits = make_splits(1, 48, (-1,))
    assert splits.test_frames == tuple(range(38, 48)) and splits.validation_frames == tuple(range(28, 38))
    described = "by frames: simulation(s) [0]: train frames 0-27, validation frames 28-37, test frames 38-47"
    assert splits.describe(48) == described


def test_fractions_set_the_block_lengths():
    splits = make_splits(1, 20, (), None, test_fraction=0.1, validation_fraction=0.25)
    assert splits.test_frames == (18, 19) and splits.validation_frames == tuple(range(13, 18))
    assert splits_for(FitSettings(test_fraction=0.1, validation_fraction=0.25), 1, 20) == splits


@pytest.mark.parametrize("n_frames", [1, 2])
def test_too_few_frames_of_one_simulation_are_refused_with_the_fix(n_frames):
    with pytest.raises(InputError, match=r"^config key 'train.test_fraction': one simulation of .* at least 3 frames"):
        make_splits(1, n_frames, (-1,))


def test_fractions_that_leave_nothing_to_train_are_refused():
    with pytest.raises(InputError, match=r"leave none of the 5 frames to train on; lower train.test_fraction"):
        make_splits(1, 5, (-1,), None, 0.5, 0.5)
    with pytest.raises(InputError, match=r"^config key 'train.validation_fraction': .* take all 2 frames"):
        make_splits(2, 2, (-1,), [], validation_fraction=0.9)


def test_whole_simulation_splits_are_unchanged():
    splits = make_splits(6, 48, (-1,))
    assert (splits.train, splits.validation, splits.test, splits.test_frames) == ((0, 1, 2, 3), (4,), (5,), ())
    assert splits.parts(5, 48) == [("test", tuple(range(48)))]
    assert splits.parts(4, 48) == [("validation", tuple(range(48)))]
    assert splits.to_dict() == {"train": [0, 1, 2, 3], "validation": [4], "test": [5], "validation_frames": []}
    with pytest.raises(InputError, match=r"^config key 'train.test_simulations': empty training split"):
        make_splits(3, 10, (0,), (1, 2))


def test_validation_frames_of_two_simulations_are_their_own_part():
    splits = make_splits(2, 10, (-1,))
    assert splits.parts(0, 10) == [("train", tuple(range(8))), ("validation", (8, 9))]
    assert splits.parts(1, 10) == [("test", tuple(range(10)))]


def test_a_frame_split_survives_the_model_files_record():
    splits = make_splits(1, 10, (-1,))
    record = splits.to_dict()
    assert record["test_frames"] == [8, 9] and Splits.from_dict(record) == splits
    old = {"train": [0], "validation": [1], "test": [2], "validation_frames": []}  # written before test_frames existed
    assert Splits.from_dict(old).test_frames == () and Splits.from_dict(old).to_dict() == old
