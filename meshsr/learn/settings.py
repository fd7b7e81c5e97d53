"""The ``train:`` section of the configuration: defaults, checks and the resolution pairs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from meshsr.errors import InputError

KINDS = ("mlp", "gnn")  # the residual networks of meshsr.learn.model
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one training run; every field has a config key of the same name under ``train:``."""

    pairs: tuple[tuple[str, str], ...] = ()  # empty: coarsest -> finest of config 'meshes' 
    model: str = "mlp"
    hidden: int = 64
    layers: int = 3
    message_passing: int = 2
    epochs: int = 16
    steps_per_epoch: int = 250
    batch_size: int = 2048
    batch_frames: int = 2
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    test_simulations: tuple[int, ...] = (-1,)
    validation_simulations: tuple[int, ...] | None = None  # None: automatic (meshsr.learn.splits)
    use_coordinates: bool = True
    panel_frame: int = -1

    def __post_init__(self) -> None:
        problems = []
        if self.model not in KINDS:
            problems.append(f"config train.model must be one of {list(KINDS)}, got {self.model!r}")
        if self.device not in DEVICES:
            problems.append(f"config train.device must be one of {list(DEVICES)}, got {self.device!r}")
        for key in ("hidden", "layers", "epochs", "steps_per_epoch", "batch_size", "batch_frames", "threads"):
            if getattr(self, key) < 1:
                problems.append(f"config train.{key} must be >= 1, got {getattr(self, key)}")
        if self.message_passing < 0:
            problems.append(f"config train.message_passing must be >= 0, got {self.message_passing}")
        if not self.lr > 0 or self.weight_decay < 0:
            problems.append(f"config train.lr must be > 0 and train.weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if problems:
            raise InputError(None, "; ".join(problems))

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> TrainSettings:
        """Settings from the config's ``train:`` mapping; missing keys take the defaults above."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise InputError(None, f"config: unknown train setting(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in section.items():
            if key == "pairs":
                value = _pairs(value)
            elif key == "test_simulations":
                value = _indices(key, value)
            elif key == "validation_simulations":
                value = None if value is None else _indices(key, value)
            values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for the model file and logs."""
        out = asdict(self)
        out["pairs"] = [list(p) for p in self.pairs] or None
        out["test_simulations"] = list(self.test_simulations)
        out["validation_simulations"] = None if self.validation_simulations is None else list(self.validation_simulations)
        return out


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(None, f"config train.pairs must be a non-empty list of [source, target] pairs, got {value!r}")
    out = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise InputError(None, f"config train.pairs: each entry must be [source, target] resolution names, got {pair!r}")
        out.append((pair[0], pair[1]))
    return tuple(out)


def _indices(key: str, value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise InputError(None, f"config train.{key} must be a list of simulation indices, got {value!r}")
    return tuple(value)


def check_pairs(pairs: tuple[tuple[str, str], ...] | list, resolutions: list[str]) -> list[tuple[str, str]]:
    """Every pair names two known resolutions, coarser first in the order of config ``meshes``.

    No pairs: the coarsest and the finest resolution, ``[[coarse, fine]]`` in the shipped config.
    """
    if not pairs:
        if len(resolutions) < 2:
            raise InputError(None, f"config 'meshes' needs two resolutions to train on, has {resolutions}")
        return [(resolutions[0], resolutions[-1])]
    out = []
    for src, dst in pairs:
        for name in (src, dst):
            if name not in resolutions:
                raise InputError(None, f"config train.pairs: unknown resolution {name!r} in [{src}, {dst}]; config 'meshes' has {resolutions}")
        if resolutions.index(src) >= resolutions.index(dst):
            raise InputError(
                None,
                f"config train.pairs: [{src}, {dst}] is not in order; pairs run coarser -> finer as in config 'meshes' "
                f"({' < '.join(resolutions)})",
            )
        if (src, dst) in out:
            raise InputError(None, f"config train.pairs: [{src}, {dst}] is listed twice")
        out.append((src, dst))
    return out
