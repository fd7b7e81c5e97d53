"""Settings: one source of defaults (the dataclasses, as documented), one of checks (the schema)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from meshsr.errors import InputError
from meshsr.example.settings import CONFIG_KEYS, ExampleSettings
from meshsr.learn.settings import FitSettings, RunSettings, TrainSettings, check_pairs

REPO = Path(__file__).resolve().parents[1]
RESOLUTIONS = ["coarse", "medium", "fine"]
WORDS = {"coarsest -> finest": [], "automatic": None, "none": None}  # defaults the docs write in words


def documented_defaults(section: str) -> dict[str, object]:
    """Key -> default of the `| key | default | meaning |` tables under docs/training.md's `section:` heading."""
    text = (REPO / "docs" / "training.md").read_text()
    body = text.split(f"## Configuration: `{section}:`", 1)[1].split("\n## ", 1)[0]
    out = {}
    for key, default in re.findall(r"^\| `(\w+)` \| ([^|]+) \|", body, flags=re.M):
        default = default.strip()
        out[key] = yaml.safe_load(default.strip("`")) if default.startswith("`") else WORDS[default]
    return out


def test_documented_train_defaults_are_the_dataclass_defaults():
    assert documented_defaults("train") == TrainSettings.defaults()


def test_documented_example_defaults_are_the_dataclass_defaults():
    documented = documented_defaults("example")
    assert documented.pop("nodes") is None  # per resolution: no default
    default = ExampleSettings()
    assert documented == {key: getattr(default, name) for key, name in CONFIG_KEYS.items()}


def test_every_train_key_is_in_exactly_one_group():
    fit, run = set(FitSettings().to_dict()), {"device", "threads", "processes"}
    assert set(TrainSettings.defaults()) == fit | run | {"pairs", "panel_frame"}
    assert not fit & (run | {"pairs", "panel_frame"})
    assert set(RunSettings().__dataclass_fields__) == run


def test_settings_parse_into_their_groups():
    default = TrainSettings.from_config(None)
    assert default == TrainSettings() and default.pairs == () and default.fit.model == "mlp"
    section = {"pairs": [["coarse", "medium"]], "model": "gnn", "test_simulations": [0, 1], "device": "cpu",
               "threads": 3, "panel_frame": 2}
    parsed = TrainSettings.from_config(section)
    assert parsed.pairs == (("coarse", "medium"),) and parsed.panel_frame == 2
    assert parsed.fit == FitSettings(model="gnn", test_simulations=(0, 1))
    assert parsed.run == RunSettings(device="cpu", threads=3)
    fit = json.loads(json.dumps(parsed.fit.to_dict()))  # plain data, as the rule's param
    assert "pairs" not in fit and "device" not in fit and "panel_frame" not in fit
    assert FitSettings.from_dict(fit) == parsed.fit
    with pytest.raises(InputError, match=r"config key 'train.modle': unknown; did you mean 'model'\? \(valid: pairs, "):
        TrainSettings.from_config({"modle": "mlp"})
    with pytest.raises(InputError, match=r"config key 'train.threads': unknown; remove it \(valid: model, "):
        FitSettings.from_dict({"threads": 2})


def test_example_settings_from_config_take_the_config_keys():
    settings = ExampleSettings.from_config({"simulations": 3, "frames": 5, "seed": 7, "nodes": {"coarse": 100}})
    assert (settings.n_simulations, settings.n_frames, settings.params_seed) == (3, 5, 7)
    assert ExampleSettings.from_config(None) == ExampleSettings()


# --- the schema: types and ranges ------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load((REPO / "config" / "config.schema.yaml").read_text())


def schema_errors(schema: dict, train: dict | None = None, example: dict | None = None) -> str:
    config = {"meshes": {"a": "a.npz", "b": "b.npz"}, "train": train or {}, "example": example or {}}
    return "; ".join(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(config))


def test_the_shipped_config_is_valid(schema):
    jsonschema.validate(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), schema)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"modle": "mlp"}, "'modle' was unexpected"),
        ({"model": "cnn"}, "'cnn' is not one of"),
        ({"device": "tpu"}, "'tpu' is not one of"),
        ({"epochs": 0}, "0 is less than the minimum of 1"),
        ({"threads": 0}, "0 is less than the minimum of 1"),
        ({"lr": 0}, "less than or equal to the minimum of 0"),
        ({"pairs": []}, "should be non-empty"),
        ({"pairs": [["coarse"]]}, "is too short"),
        ({"test_simulations": [1.5]}, "1.5 is not of type 'integer'"),
        ({"panel_frame": "last"}, "'last' is not of type 'integer'"),
    ],
)
def test_bad_train_values_are_refused_by_the_schema(schema, train, message):
    assert message in schema_errors(schema, train=train)


def test_bad_example_values_are_refused_by_the_schema(schema):
    assert "0 is less than the minimum of 1" in schema_errors(schema, example={"simulations": 0})
    assert schema_errors(schema, example={"simulations": 2, "frames": 3, "seed": 1}) == ""


# --- checks across keys ---------------------------------------------------------------------


def test_check_pairs_order_and_names():
    assert check_pairs((), RESOLUTIONS) == [("coarse", "fine")]
    assert check_pairs((), ["a", "b"]) == [("a", "b")]
    two = [("coarse", "fine"), ("medium", "fine")]
    assert check_pairs(two, RESOLUTIONS) == two
    with pytest.raises(InputError, match="unknown resolution 'huge'"):
        check_pairs([("coarse", "huge")], RESOLUTIONS)
    with pytest.raises(InputError, match=r"\[fine, coarse\] is not in order.*coarse < medium < fine"):
        check_pairs([("fine", "coarse")], RESOLUTIONS)
    with pytest.raises(InputError, match="not in order"):
        check_pairs([("fine", "fine")], RESOLUTIONS)
    with pytest.raises(InputError, match="listed twice"):
        check_pairs([("coarse", "fine"), ("coarse", "fine")], RESOLUTIONS)
