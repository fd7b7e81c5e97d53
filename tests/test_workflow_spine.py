"""The pipeline spine through the real snakemake CLI on tiny example data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from meshsr.mesh.bundle import load_bundle, save_bundle

pytestmark = pytest.mark.integration


def test_single_pair_builds_only_what_it_needs_then_nothing(workflow):
    target = "results/cache/coarse_fine.npz"
    assert workflow.planned_jobs(target) == {"example_data": 2, "pair_cache": 1}
    workflow.run(target)
    root = workflow.root
    assert (root / target).is_file()
    assert sorted(p.name for p in (root / "results/example").glob("*.npz")) == ["coarse.npz", "fine.npz"]
    assert sorted(p.name for p in (root / "results/cache").glob("*.npz")) == ["coarse_fine.npz"]
    assert workflow.planned_jobs(target) == {}
    assert "Nothing to be done" in workflow.run(target).stdout + workflow.run(target).stderr


def test_pair_cache_follows_contract(workflow):
    workflow.run("results/cache/coarse_fine.npz")
    root = workflow.root
    src, dst = load_bundle(root / "results/example/coarse.npz"), load_bundle(root / "results/example/fine.npz")
    with np.load(root / "results/cache/coarse_fine.npz", allow_pickle=False) as c:
        s, t, f = src.fields.shape[0], src.fields.shape[1], src.fields.shape[3]
        assert c["coarse_interp"].dtype == np.float32 and c["coarse_interp"].shape == (s, t, dst.n_nodes, f)
        np.testing.assert_array_equal(c["fine_features"], dst.fields.astype(np.float32))
        assert c["op_data"].dtype == np.float64
        w = sp.csr_matrix((c["op_data"], c["op_indices"], c["op_indptr"]), shape=tuple(c["op_shape"]))
        assert w.shape == (dst.n_nodes, src.n_nodes)
        for si in range(s):
            np.testing.assert_allclose(w @ src.fields[si, -1], c["coarse_interp"][si, -1], rtol=1e-6, atol=1e-6)
        assert c["extrapolated"].dtype == bool and c["extrapolated"].shape == (dst.n_nodes,)
        meta = json.loads(str(c["meta"]))
        n_extrapolated = int(c["extrapolated"].sum())
    for key in ("format_version", "source", "target", "source_sha256", "target_sha256", "method",
                "n_source", "n_target", "n_extrapolated", "created", "versions"):
        assert key in meta, key
    assert (meta["source"], meta["target"]) == ("coarse", "fine")
    assert meta["n_extrapolated"] == n_extrapolated
    log = (root / "results/logs/cache/coarse_fine.log").read_text()
    assert "relative L2 of interpolated coarse vs fine" in log


def test_all_builds_every_ordered_pair(workflow):
    workflow.update_config(meshes={
        "coarse": "results/example/coarse.npz",
        "medium": "results/example/medium.npz",
        "fine": "results/example/fine.npz",
    })
    assert workflow.planned_jobs("all").get("pair_cache") == 3
    workflow.run("results/cache/coarse_medium.npz", "results/cache/coarse_fine.npz", "results/cache/medium_fine.npz")
    names = sorted(p.name for p in (workflow.root / "results/cache").glob("*.npz"))
    assert names == ["coarse_fine.npz", "coarse_medium.npz", "medium_fine.npz"]


def test_delete_all_output_keeps_user_inputs(workflow):
    root = workflow.root
    workflow.run("results/cache/coarse_medium.npz")
    user = root / "data" / "coarse.npz"
    user.parent.mkdir()
    save_bundle(user, load_bundle(root / "results/example/coarse.npz"))
    workflow.update_config(meshes={"coarse": "data/coarse.npz", "medium": "results/example/medium.npz"})
    workflow.run("results/cache/coarse_medium.npz")
    workflow.run("--delete-all-output", "results/cache/coarse_medium.npz")
    assert not (root / "results/cache/coarse_medium.npz").exists()
    assert not (root / "results/example/medium.npz").exists()
    assert user.is_file()


def test_reverse_pair_is_refused(workflow):
    proc = workflow.run("results/cache/fine_coarse.npz", check=False)
    assert proc.returncode != 0
    assert "no pair fine_coarse" in proc.stdout + proc.stderr and "; ask for coarse_fine" in proc.stdout + proc.stderr


def test_config_naming_missing_file_fails_before_work(workflow):
    workflow.update_config(meshes={"coarse": "data/missing.npz", "fine": "results/example/fine.npz"})
    proc = workflow.run("results/cache/coarse_fine.npz", check=False)
    assert proc.returncode != 0
    line = "ERROR config key 'meshes.coarse': input file data/missing.npz does not exist; correct the path or put "
    assert line + "the file there" in proc.stderr.splitlines()
    assert not (workflow.root / "results").exists()


def test_bad_bundle_gives_one_clear_error_and_no_cache(workflow):
    root = workflow.root
    workflow.run("results/example/coarse.npz")
    b = load_bundle(root / "results/example/coarse.npz")
    b.fields = b.fields.copy()
    b.fields[0, 0, 0, 0] = np.nan
    (root / "data").mkdir()
    save_bundle(root / "data/bad.npz", b)
    workflow.update_config(meshes={"coarse": "data/bad.npz", "fine": "results/example/fine.npz"})
    proc = workflow.run("results/cache/coarse_fine.npz", check=False)
    assert proc.returncode != 0
    assert "ERROR data/bad.npz: 'fields' holds 1 NaN/Inf values; fix or drop those values in the solver output" in (
        proc.stderr
    )
    assert not (root / "results/cache/coarse_fine.npz").exists()
    assert not list((root / "results/cache").glob(".tmp-*"))  # glob of a missing directory is empty
