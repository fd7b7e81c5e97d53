"""Training, validation (checkpoint choice) and held-out test data: by whole simulations, or by frames.

* S >= 2, **by simulation**: ``test_simulations`` are held out entirely.  Validation
  defaults to the last simulation that is not a test simulation.  When that would leave
  nothing to train on (S = 2 with one test simulation), or when ``validation_simulations``
  is an empty list, validation is instead the last ``validation_fraction`` of the frames of
  the training simulations, which are then not trained on.
* S = 1, **by frames** (one long run): the test is the last ``test_fraction`` of the
  frames, validation the ``validation_fraction`` just before it, both contiguous blocks at
  the end of the run; the frames before them train.  ``test_simulations`` and
  ``validation_simulations`` are not used.  Each block holds ``max(1, ceil(fraction * T))``
  frames, so at least three frames are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meshsr.errors import InputError

SPLITS = ("train", "validation", "test")
TEST_FRACTION = 0.2  # defaults of train.test_fraction / train.validation_fraction (meshsr.learn.settings)
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    """Sorted simulation indices of each split, and the frames held out of the training simulations.

    Every simulation is in exactly one of ``train``, ``validation`` and ``test``.
    ``validation_frames`` (then ``validation`` is empty) and ``test_frames`` (then ``test``
    is empty: the split by frames of a single simulation) are frames of the training
    simulations that validate or test instead of training.
    """

    train: tuple[int, ...]
    validation: tuple[int, ...]
    test: tuple[int, ...]
    validation_frames: tuple[int, ...] = ()
    test_frames: tuple[int, ...] = ()

    @property
    def by_frames(self) -> bool:
        """The test is a block of frames (one simulation), not whole simulations."""
        return bool(self.test_frames)

    def of(self, sim: int) -> str:
        for name in SPLITS:
            if sim in getattr(self, name):
                return name
        raise KeyError(sim)

    def train_frames(self, n_frames: int) -> tuple[int, ...]:
        held = set(self.validation_frames) | set(self.test_frames)
        return tuple(t for t in range(n_frames) if t not in held)

    def parts(self, sim: int, n_frames: int) -> list[tuple[str, tuple[int, ...]]]:
        """(split, frames) of simulation ``sim``: one part for a held-out simulation, up to three for a training one."""
        name = self.of(sim)
        if name != "train":
            return [(name, tuple(range(n_frames)))]
        held = [("validation", self.validation_frames), ("test", self.test_frames)]
        return [("train", self.train_frames(n_frames)), *((k, frames) for k, frames in held if frames)]

    def describe(self, n_frames: int) -> str:
        """One line for the logs and the metrics: which simulations and frames are in each split."""
        if self.by_frames or self.validation_frames:
            blocks = [("train", self.train_frames(n_frames)), ("validation", self.validation_frames)]
            blocks += [("test", self.test_frames)] if self.test_frames else []
            text = ", ".join(f"{name} frames {frame_range(frames)}" for name, frames in blocks)
            head = "by frames" if self.by_frames else "by simulation, validation by frames"
            text = f"{head}: simulation(s) {list(self.train)}: {text}"
            return text if self.by_frames else f"{text}; test simulation(s) {list(self.test)}"
        names = ", ".join(f"{name} {list(getattr(self, name))}" for name in SPLITS)
        return f"by simulation: {names}"

    @classmethod
    def from_dict(cls, values: dict[str, list[int]]) -> Splits:
        """From :meth:`to_dict`'s plain data (a model file's record); missing lists are empty."""
        return cls(**{k: tuple(values.get(k, ())) for k in (*SPLITS, "validation_frames", "test_frames")})

    def to_dict(self) -> dict[str, list[int]]:
        out = {name: list(getattr(self, name)) for name in SPLITS}
        out["validation_frames"] = list(self.validation_frames)
        if self.test_frames:  # only the split by frames has them: other records stay as they were
            out["test_frames"] = list(self.test_frames)
        return out


def frame_range(frames: tuple[int, ...] | list[int]) -> str:
    """``first-last`` of a contiguous block of frames (``first`` for one frame), ``none`` for no frame."""
    if not frames:
        return "none"
    return f"{frames[0]}-{frames[-1]}" if len(frames) > 1 else f"{frames[0]}"


def _block(fraction: float, n_frames: int) -> int:
    return max(1, math.ceil(fraction * n_frames - 1e-9))


def split_frames(n_frames: int, test_fraction: float, validation_fraction: float) -> Splits:
    """The split by frames of one simulation: test last, validation just before it, the rest trains."""
    n_test, n_val = _block(test_fraction, n_frames), _block(validation_fraction, n_frames)
    if n_frames < 3:
        raise InputError(
            None,
            f"config key 'train.test_fraction': one simulation of {n_frames} frame(s) cannot be split by frames "
            "into training, validation and test (at least one frame each); provide at least 3 frames or "
            "at least 2 simulations",
        )
    if n_test + n_val >= n_frames:
        raise InputError(
            None,
            f"config key 'train.test_fraction': test ({n_test}) and validation ({n_val}) frames leave none of the "
            f"{n_frames} frames to train on; lower train.test_fraction and train.validation_fraction",
        )
    test = tuple(range(n_frames - n_test, n_frames))
    validation = tuple(range(n_frames - n_test - n_val, n_frames - n_test))
    return Splits(train=(0,), validation=(), test=(), validation_frames=validation, test_frames=test)


def make_splits(
    n_simulations: int,
    n_frames: int,
    test: tuple[int, ...] | list[int],
    validation: tuple[int, ...] | list[int] | None = None,
    test_fraction: float = TEST_FRACTION,
    validation_fraction: float = VALIDATION_FRACTION,
) -> Splits:
    """The splits of S = ``n_simulations`` simulations of T = ``n_frames`` frames (module docstring).

    ``test`` and ``validation`` are simulation indices (negative: Python-style, from the
    end); ``validation=None``: the last non-test simulation if at least one other remains to
    train on, else validation frames.  Refuses indices out of range, a simulation in both
    lists, an empty training split and too few frames to hold any out.
    """
    if n_simulations == 1:
        return split_frames(n_frames, test_fraction, validation_fraction)

    def resolve(key: str, indices) -> tuple[int, ...]:
        out = set()
        for i in indices:
            if not -n_simulations <= i < n_simulations:
                raise InputError(
                    None,
                    f"config key 'train.{key}': simulation {i} does not exist (S = {n_simulations}); "
                    f"use indices {-n_simulations} to {n_simulations - 1} (negative: from the end)",
                )
            out.add(i % n_simulations)
        return tuple(sorted(out))

    test_ids = resolve("test_simulations", test)
    rest = [s for s in range(n_simulations) if s not in test_ids]
    if validation is None:
        val_ids = (rest[-1],) if len(rest) >= 2 else ()
    else:
        val_ids = resolve("validation_simulations", validation)
    both = sorted(set(test_ids) & set(val_ids))
    if both:
        raise InputError(
            None,
            f"config key 'train.validation_simulations': simulation(s) {both} are also in train.test_simulations; "
            "put each simulation in one of the two lists",
        )
    train_ids = tuple(s for s in rest if s not in val_ids)
    if not train_ids:
        raise InputError(
            None,
            f"config key 'train.test_simulations': empty training split: all {n_simulations} simulation(s) are test "
            f"{list(test_ids)} or validation {list(val_ids)}; shorten train.test_simulations / "
            "train.validation_simulations or provide more simulations",
        )
    frames: tuple[int, ...] = ()
    if not val_ids:
        if n_frames < 2:
            raise InputError(
                None,
                f"config key 'train.validation_simulations': no validation data: no validation simulation and only "
                f"{n_frames} frame, so no frames can be held out; provide more simulations or frames",
            )
        held = _block(validation_fraction, n_frames)
        if held >= n_frames:
            raise InputError(
                None,
                f"config key 'train.validation_fraction': validation by frames would take all {n_frames} frames of "
                "the training simulations; lower train.validation_fraction",
            )
        frames = tuple(range(n_frames - held, n_frames))
    return Splits(train=train_ids, validation=val_ids, test=test_ids, validation_frames=frames)


def splits_for(fit, n_simulations: int, n_frames: int) -> Splits:
    """:func:`make_splits` with the split keys of ``fit`` (a :class:`meshsr.learn.settings.FitSettings`)."""
    return make_splits(
        n_simulations, n_frames, fit.test_simulations, fit.validation_simulations, fit.test_fraction,
        fit.validation_fraction,
    )
