"""The configuration check: one line per problem, unknown keys refused at every level, defaults filled in."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from meshsr.config import check_config, load_schema

REPO = Path(__file__).resolve().parents[1]
TOP = "(valid: meshes, cache_dir, use_cache, example, train, upsample)"


@pytest.fixture(scope="module")
def schema() -> dict:
    return load_schema(REPO / "config" / "config.schema.yaml")


def shipped() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def problems(schema: dict, **changes) -> list[str]:
    config = shipped()
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            config[section][name] = value
        else:
            config[section] = value
    return check_config(config, schema)


def test_the_shipped_config_passes_unchanged(schema):
    config = shipped()
    assert check_config(config, schema) == [] and config == shipped()


def test_the_schema_defaults_are_filled_in(schema):
    config = {"meshes": {"a": "a.npz", "b": "b.npz"}}
    assert check_config(config, schema) == []
    assert config["use_cache"] is True and config["cache_dir"] == "results/cache"
    kept = {"meshes": {"a": "a.npz", "b": "b.npz"}, "use_cache": False}
    assert check_config(kept, schema) == [] and kept["use_cache"] is False


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"cache_dri": "/x"}, f"config key 'cache_dri': unknown; did you mean 'cache_dir'? {TOP}"),
        ({"usecache": False}, f"config key 'usecache': unknown; did you mean 'use_cache'? {TOP}"),
        ({"verbose": True}, f"config key 'verbose': unknown; remove it {TOP}"),
        ({"train__modle": "mlp"}, "config key 'train.modle': unknown; did you mean 'model'? (valid: pairs, model, "),
        ({"example__simulation": 3}, "config key 'example.simulation': unknown; did you mean 'simulations'? (valid: "),
    ],
    ids=["top-level-typo", "top-level-typo-2", "top-level-far", "in-train", "in-example"],
)
def test_unknown_keys_name_the_nearest_valid_one(schema, changes, line):
    (found,) = problems(schema, **changes)
    assert found.startswith(line)


SCHEMA_CASES = {
    "epochs-0": ({"train__epochs": 0}, "config key 'train.epochs': 0 is too small; use an integer of at least 1"),
    "one-resolution": (
        {"meshes": {"coarse": "results/example/coarse.npz"}},
        "config key 'meshes': needs at least two resolutions (coarsest first), has 1: coarse; add a finer mesh bundle",
    ),
    "no-meshes": (
        {"meshes": None},
        "config key 'meshes': is unset (null); use a mapping (key: value)",
    ),
    "lr-string": ({"train__lr": "fast"}, "config key 'train.lr': \"fast\" is a string; use a number above 0 and "
                  "at most 10"),
    "lr-huge": ({"train__lr": 1e30}, "config key 'train.lr': 1e+30 is too large; use a number above 0 and at most "
                "10"),
    "model-choice": ({"train__model": "cnn"}, "config key 'train.model': \"cnn\" is not a choice; use one of \"mlp\", "
                     "\"gnn\""),
    "threads-bool": ({"train__threads": True}, "config key 'train.threads': true is a boolean; use an integer of at "
                     "least 1"),
    "use-cache-string": ({"use_cache": "no"}, "config key 'use_cache': \"no\" is a string; use true or false"),
    "empty-cache-dir": ({"cache_dir": ""}, "config key 'cache_dir': is empty; use a non-empty string"),
    "pair-of-one": ({"train__pairs": [["coarse"]]}, "config key 'train.pairs[0]': [\"coarse\"] has too few entries; "
                    "use a list of two names, [source, target]"),
    "bad-name": (
        {"meshes": {"coarse_1": "a.npz", "fine": "b.npz"}},
        "config key 'meshes.coarse_1': bad name; use letters, digits and '-' only (no '_': it separates the names in "
        "a cache file)",
    ),
    "few-nodes": ({"example__nodes": {"coarse": 10}}, "config key 'example.nodes.coarse': 10 is too small; use an "
                  "integer of at least 50"),
}


@pytest.mark.parametrize(("changes", "line"), list(SCHEMA_CASES.values()), ids=list(SCHEMA_CASES))
def test_a_schema_problem_is_one_line_naming_the_key(schema, changes, line):
    assert problems(schema, **changes) == [line]


def test_missing_meshes_say_what_to_add(schema):
    assert check_config({}, schema) == [
        "config key 'meshes': missing; add it (resolution name -> mesh input, coarsest first)"
    ]


def test_every_problem_gets_its_own_line(schema):
    config = copy.deepcopy(shipped())
    config["train"].update(epochs=0, lr=-1, modle="mlp")
    config["cache_dri"] = "x"
    found = check_config(config, schema)
    keys = [line.split("'")[1] for line in found]
    assert keys == ["cache_dri", "train.epochs", "train.lr", "train.modle"]
    assert all("\n" not in line and "; " in line for line in found)
