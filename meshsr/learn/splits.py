"""Splits by whole simulations: training, validation (checkpoint choice) and held-out test.

Validation defaults to the last simulation that is not a test simulation.  When that
would leave nothing to train on (S = 2 with one test simulation), or when
``validation_simulations`` is an empty list, validation is instead the last
``VALIDATION_FRAME_FRACTION`` of the frames of the training simulations, which are then
not trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meshsr.errors import InputError

SPLITS = ("train", "validation", "test")
VALIDATION_FRAME_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    """Sorted simulation indices of each split, and the frames held out for validation.

    Every simulation is in exactly one split.  ``validation_frames`` is empty when whole
    simulations validate; otherwise ``validation`` is empty and these frames of the
    training simulations validate.
    """

    train: tuple[int, ...]
    validation: tuple[int, ...]
    test: tuple[int, ...]
    validation_frames: tuple[int, ...] = ()

    def of(self, sim: int) -> str:
        for name in SPLITS:
            if sim in getattr(self, name):
                return name
        raise KeyError(sim)

    def train_frames(self, n_frames: int) -> tuple[int, ...]:
        return tuple(t for t in range(n_frames) if t not in self.validation_frames)

    @classmethod
    def from_dict(cls, values: dict[str, list[int]]) -> Splits:
        """From :meth:`to_dict`'s plain data (a model file's record); missing lists are empty."""
        return cls(**{k: tuple(values.get(k, ())) for k in (*SPLITS, "validation_frames")})

    def to_dict(self) -> dict[str, list[int]]:
        out = {name: list(getattr(self, name)) for name in SPLITS}
        out["validation_frames"] = list(self.validation_frames)
        return out


def make_splits(
    n_simulations: int,
    n_frames: int,
    test: tuple[int, ...] | list[int],
    validation: tuple[int, ...] | list[int] | None = None,
) -> Splits:
    """Resolve (possibly negative, Python-style) indices; the other simulations train.

    ``validation=None``: the last non-test simulation if at least one other remains to
    train on, else validation frames.  Refuses indices out of range, a simulation in both
    lists and an empty training split.
    """

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
            f"empty training split: all {n_simulations} simulation(s) are test {list(test_ids)} or validation "
            f"{list(val_ids)}; provide more simulations or shorten train.test_simulations / "
            "train.validation_simulations",
        )
    frames: tuple[int, ...] = ()
    if not val_ids:
        if n_frames < 2:
            raise InputError(
                None,
                f"no validation data: no validation simulation and only {n_frames} frame, so no frames can be "
                "held out; provide more simulations or frames",
            )
        held = max(1, math.ceil(VALIDATION_FRAME_FRACTION * n_frames))
        frames = tuple(range(n_frames - held, n_frames))
    return Splits(train=train_ids, validation=val_ids, test=test_ids, validation_frames=frames)
