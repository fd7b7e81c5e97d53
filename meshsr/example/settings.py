"""Settings of the example data set: the defaults of the config's ``example:`` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# config key under ``example:`` -> field ('nodes', one count per resolution, is the rules' business)
CONFIG_KEYS = {"simulations": "n_simulations", "frames": "n_frames", "seed": "params_seed", "dim": "dim"}

# The 3D problem (meshsr/example/cube.py) on its coarser meshes: wider sources, more diffusion,
# a stronger swirl and a shorter run; ``example.dim: 3`` takes these instead of the 2D defaults.
DIM_DEFAULTS: dict[int, dict[str, Any]] = {
    3: {
        "t_end": 1.5,
        "diffusivities": (2e-3, 1e-2),
        "source_width": 0.1,
        "source_strength": (4.0, 10.0),
        "circulation": (-2.0, 2.0),
    }
}


@dataclass(frozen=True)
class ExampleSettings:
    """Parameters of the example data set; ``(lo, hi)`` pairs are uniform sampling ranges."""

    n_simulations: int = 6
    dim: int = 2  # 2: channel with a hole (mesh.py), 3: helical flow through the unit cube (cube.py)
    n_frames: int = 48
    t_end: float = 3.0
    params_seed: int = 0
    steps_per_frame: int = 2
    theta: float = 0.5  # 0.5: Crank-Nicolson, 1.0: backward Euler
    field_names: tuple[str, ...] = ("tracer", "heat")
    diffusivities: tuple[float, ...] = (5e-4, 2e-3)
    n_sources: int = 3
    source_width: float = 0.05
    source_strength: tuple[float, float] = (2.0, 6.0)
    source_frequency: tuple[float, float] = (1.0, 2.5)
    flow_speed: tuple[float, float] = (0.9, 1.5)
    circulation: tuple[float, float] = (-0.6, 0.6)  # |Gamma| < 4 pi U R: stagnation points stay on the cylinder

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim}")
        if min(self.n_simulations, self.n_frames, self.steps_per_frame, self.n_sources) < 1:
            raise ValueError("n_simulations, n_frames, steps_per_frame and n_sources must be >= 1")
        if self.t_end <= 0:
            raise ValueError(f"t_end must be positive, got {self.t_end}")
        if not 0 < self.source_width <= 0.1:  # wider sources do not fit between the walls and the hole
            raise ValueError(f"source_width must lie in (0, 0.1], got {self.source_width}")
        if not 0.5 <= self.theta <= 1.0:
            raise ValueError(f"theta must lie in [0.5, 1], got {self.theta}")
        if len(self.field_names) != len(self.diffusivities) or not self.field_names:
            raise ValueError("field_names and diffusivities must be non-empty and of equal length")
        if min(self.diffusivities) <= 0:
            raise ValueError("diffusivities must be positive")

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> ExampleSettings:
        """From the config's ``example:`` mapping (checked by the schema); missing keys take the defaults.

        The physical defaults are those of the dimension (:data:`DIM_DEFAULTS`).
        """
        section = section or {}
        chosen = {name: section[key] for key, name in CONFIG_KEYS.items() if key in section}
        return cls(**{**DIM_DEFAULTS.get(chosen.get("dim", 2), {}), **chosen})
