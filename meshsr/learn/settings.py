"""The ``train:`` section of the configuration, sorted by what a change of each key reruns.

* :class:`FitSettings`, the model and its optimisation: a change retrains (the train rule's params);
  of them, :data:`SAMPLING_KEYS` also redraw the written training batches;
* :class:`RunSettings`, where and how fast a job runs (``device``, ``threads``): rule resources, never
  provenance, so a change reruns nothing;
* ``panel_frame``, a plot setting: a change replots;
* ``pairs``, which models the workflow builds: a workflow-level choice, no job's param.

The dataclass defaults are the defaults of the config keys of the same name (docs/training.md lists
them; a test compares). Types and ranges are checked by config/config.schema.yaml; only checks across
keys live here (:func:`check_pairs`) and in :mod:`meshsr.learn.splits`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from meshsr.errors import InputError, suggest
from meshsr.learn.splits import TEST_FRACTION, VALIDATION_FRACTION

KINDS = ("mlp", "gnn")  # the residual networks of meshsr.learn.model


@dataclass(frozen=True)
class FitSettings:
    """What the trained model depends on: the architecture, the optimisation, the splits and the inputs."""

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
    test_simulations: tuple[int, ...] = (-1,)
    validation_simulations: tuple[int, ...] | None = None  # None: automatic (meshsr.learn.splits)
    test_fraction: float = TEST_FRACTION  # S = 1: the last frames test ...
    validation_fraction: float = VALIDATION_FRACTION  # ... and those before them validate
    use_coordinates: bool = True
    precision: str = "fp32"  # fp32 | bf16 | fp16 (mixed precision, meshsr.learn.precision): changes the numbers

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FitSettings:
        """From plain data (lists for the index tuples); missing keys take the defaults."""
        values = dict(values or {})
        _refuse_unknown(values, [f.name for f in fields(cls)])
        if values.get("test_simulations") is not None:
            values["test_simulations"] = tuple(values["test_simulations"])
        if values.get("validation_simulations") is not None:
            values["validation_simulations"] = tuple(values["validation_simulations"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples): the train rule's param and the model file's record."""
        out = asdict(self)
        out["test_simulations"] = list(self.test_simulations)
        if self.validation_simulations is not None:
            out["validation_simulations"] = list(self.validation_simulations)
        return out


# The fit settings that decide which rows make which batch: the params of the training_batches rule
# (meshsr.learn.batch_stream), whose batches every other fit setting trains from unchanged.
SAMPLING_KEYS = (
    "model", "epochs", "steps_per_epoch", "batch_size", "seed", "test_simulations", "validation_simulations",
    "test_fraction", "validation_fraction", "use_coordinates",
)


def sampling_settings(fit: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SAMPLING_KEYS` of a fit settings dict (:meth:`FitSettings.to_dict`)."""
    return {key: fit.get(key) for key in SAMPLING_KEYS}


@dataclass(frozen=True)
class RunSettings:
    """Where a train or evaluate job runs; the same seed gives the same model on the same device and threads."""

    device: str = "auto"  # auto: CUDA when available | cpu | cuda
    threads: int = 2  # in all: each of the `processes` gets threads // processes (at least 1)
    processes: int = 1  # DDP ranks under torchrun (meshsr.learn.distributed): the same model up to rounding


@dataclass(frozen=True)
class TrainSettings:
    """The whole ``train:`` section; ``fit`` and ``run`` hold the config keys of their fields."""

    pairs: tuple[tuple[str, str], ...] = ()  # empty: coarsest -> finest of config 'meshes'
    fit: FitSettings = field(default_factory=FitSettings)
    run: RunSettings = field(default_factory=RunSettings)
    panel_frame: int = -1

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> TrainSettings:
        """Settings from the config's ``train:`` mapping; missing keys take the defaults."""
        section = dict(section or {})
        fit_keys, run_keys = [f.name for f in fields(FitSettings)], [f.name for f in fields(RunSettings)]
        _refuse_unknown(section, ["pairs", *fit_keys, *run_keys, "panel_frame"])
        return cls(
            pairs=tuple((src, dst) for src, dst in section.get("pairs") or ()),
            fit=FitSettings.from_dict({k: v for k, v in section.items() if k in fit_keys}),
            run=RunSettings(**{k: v for k, v in section.items() if k in run_keys}),
            **({"panel_frame": section["panel_frame"]} if "panel_frame" in section else {}),
        )

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Config key -> default value, as plain data (``pairs``: empty list)."""
        default = cls()
        return {"pairs": [], **default.fit.to_dict(), **asdict(default.run), "panel_frame": default.panel_frame}


def _refuse_unknown(values: dict[str, Any], known: list[str]) -> None:
    unknown = [key for key in values if key not in known]
    if unknown:
        raise InputError(None, f"config key 'train.{unknown[0]}': unknown; {suggest(unknown[0], known)}")


def check_pairs(pairs: tuple[tuple[str, str], ...] | list, resolutions: list[str]) -> list[tuple[str, str]]:
    """Every pair names two known resolutions, coarser first in the order of config ``meshes``.

    No pairs: the coarsest and the finest resolution, ``[[coarse, fine]]`` in the shipped config.
    """
    if not pairs:
        if len(resolutions) < 2:
            raise InputError(
                None, f"config key 'meshes': needs two resolutions to train on, has {resolutions}; add a finer mesh"
            )
        return [(resolutions[0], resolutions[-1])]
    out = []
    for src, dst in pairs:
        for name in (src, dst):
            if name not in resolutions:
                raise InputError(
                    None, f"config key 'train.pairs': unknown resolution {name!r} in [{src}, {dst}]; "
                    f"use names of config 'meshes': {', '.join(resolutions)}"
                )
        if resolutions.index(src) >= resolutions.index(dst):
            raise InputError(
                None,
                f"config key 'train.pairs': [{src}, {dst}] is not in order: pairs run coarser -> finer as in config "
                f"'meshes' ({' < '.join(resolutions)}); name the coarser resolution first",
            )
        if (src, dst) in out:
            raise InputError(None, f"config key 'train.pairs': [{src}, {dst}] is listed twice; remove one")
        out.append((src, dst))
    return out
