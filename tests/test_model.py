"""Networks, the mesh graph and the model file (weights_only round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshsr.errors import InputError
from meshsr.learn.model import MeshGNN, ModelConfig, ResidualMLP, build_model, infer, mean_adjacency, mesh_edges
from meshsr.learn.normalisation import Normalisation
from meshsr.learn.trained_model import TrainedModel

SQUARE = np.array([[0, 1, 2], [1, 3, 2]])  # two triangles sharing the edge (1, 2)


def test_mesh_edges_are_unique_and_sorted():
    edges = mesh_edges(SQUARE, 4)
    assert edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]


def test_mean_adjacency_averages_over_neighbours():
    graph = mean_adjacency(SQUARE, 4)
    dense = graph.to_dense()
    torch.testing.assert_close(dense.sum(dim=1), torch.ones(4))
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    torch.testing.assert_close(torch.sparse.mm(graph, values)[0], torch.tensor([2.5]))  # node 0: mean of 2 and 3
    torch.testing.assert_close(torch.sparse.mm(graph, values)[1], torch.tensor([(1 + 3 + 4) / 3]))


@pytest.mark.parametrize("kind", ["mlp", "gnn"])
def test_networks_start_as_plain_interpolation_and_have_the_right_shape(kind):
    torch.manual_seed(0)
    config = ModelConfig(kind=kind, n_inputs=5, n_outputs=2, hidden=8, layers=2, message_passing=2)
    net = build_model(config)
    assert isinstance(net, ResidualMLP if kind == "mlp" else MeshGNN)
    x = torch.randn(3, 4, 5)
    out = net(x, mean_adjacency(SQUARE, 4))
    assert out.shape == (3, 4, 2)
    assert torch.all(out == 0)  # zero-initialised output layer: prediction == interpolation


def test_gnn_uses_the_neighbours_and_mlp_does_not():
    torch.manual_seed(0)
    graph = mean_adjacency(SQUARE, 4)
    x = torch.randn(1, 4, 3)
    changed = x.clone()
    changed[0, 3] += 1.0  # node 3 is a neighbour of 1 and 2, not of 0
    for kind, expect_change_at_1 in (("mlp", False), ("gnn", True)):
        net = build_model(ModelConfig(kind=kind, n_inputs=3, n_outputs=1, hidden=8, layers=2, message_passing=1))
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.5)
        a, b = net(x, graph), net(changed, graph)
        assert torch.equal(a[0, 0], b[0, 0])
        assert (not torch.equal(a[0, 1], b[0, 1])) == expect_change_at_1


def test_gnn_needs_the_graph():
    net = build_model(ModelConfig(kind="gnn", n_inputs=3, n_outputs=1))
    with pytest.raises(ValueError, match="graph"):
        net(torch.zeros(1, 4, 3))


def test_model_config_refuses_unknown_kinds_and_sizes():
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="transformer", n_inputs=3, n_outputs=1)
    with pytest.raises(ValueError, match="sizes"):
        ModelConfig(kind="mlp", n_inputs=3, n_outputs=1, hidden=0)


def small_trained(kind: str = "mlp") -> TrainedModel:
    torch.manual_seed(1)
    config = ModelConfig(kind=kind, n_inputs=3, n_outputs=2, hidden=8, layers=2, message_passing=1)
    net = build_model(config)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    norm = Normalisation(np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 0.5]), np.array([0.01, 0.02]))
    return TrainedModel(
        config=config,
        network=net,
        normalisation=norm,
        feature_names=["a", "b", "c"],
        feature_options={"use_coordinates": True, "field_std": [1.0, 2.0]},
        field_names=["u", "v"],
        source="coarse",
        target="fine",
        settings={"seed": 1},
        splits={"train": [0], "validation": [1], "test": [2], "validation_frames": []},
        history={"epoch": [1], "train_loss": [0.5], "validation_loss": [0.6], "best_epoch": 1},
    )


@pytest.mark.parametrize("kind", ["mlp", "gnn"])
def test_model_file_round_trip_with_weights_only(tmp_path, kind):
    trained = small_trained(kind)
    path = tmp_path / "models" / "m.pt"
    trained.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary left behind
    state = torch.load(path, weights_only=True)
    assert state["model"]["kind"] == kind and state["field_names"] == ["u", "v"]
    assert set(state["normalisation"]) == {"feature_mean", "feature_std", "target_rms"}
    loaded = TrainedModel.load(path)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 4, 3)).astype(np.float32)
    scales = rng.uniform(0.5, 1.0, size=(2, 4, 2)).astype(np.float32)
    interp = rng.normal(size=(2, 4, 2)).astype(np.float32)
    graph = mean_adjacency(SQUARE, 4)
    expected = trained.predict(features, scales, interp, graph)
    assert np.array_equal(loaded.predict(features, scales, interp, graph), expected)
    assert not np.array_equal(expected, interp)
    assert loaded.history == trained.history and loaded.feature_options == trained.feature_options


def test_predict_is_interpolation_plus_scaled_network_output():
    trained = small_trained()
    features = np.zeros((1, 2, 3), dtype=np.float32)
    scales = np.full((1, 2, 2), 2.0, dtype=np.float32)
    interp = np.ones((1, 2, 2), dtype=np.float32)
    z = torch.from_numpy(trained.normalisation.features(features))
    with torch.no_grad():
        raw = trained.network(z).numpy()
    np.testing.assert_allclose(trained.predict(features, scales, interp), 1.0 + 2.0 * raw, rtol=1e-6)


class Trap:
    """Unpickling it runs code: it writes the file its argument names."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_spring, (self.path,))


def _spring(path: str) -> None:
    with open(path, "w") as fh:
        fh.write("unpickled")


def incomplete(path):
    state = small_trained().to_state()
    state["state_dict"].popitem()
    torch.save(state, path)


FOREIGN_MODELS = {
    "dict": (lambda p: torch.save({"a": 1}, p), "a dict without 'format_version'; keys: a"),
    "module": (lambda p: torch.save(torch.nn.Linear(2, 2), p), "pickled code, torch.nn.modules.linear.Linear,"),
    "code": (lambda p: torch.save(Trap(str(p) + ".sprung"), p), "pickled code, test_model._spring, which is never"),
    "list": (lambda p: torch.save([1, 2], p), "it holds a list, not a dict"),
    "version": (lambda p: torch.save({"format_version": 99}, p), "format version 99, this meshsr reads 1"),
    "junk": (lambda p: p.write_bytes(b"not a torch file"), "not a zip archive: truncated, or not written by torch"),
    "empty": (lambda p: p.write_bytes(b""), "not a zip archive"),
    "incomplete": (incomplete, "model file is incomplete or inconsistent (RuntimeError: Error(s) in loading"),
}


@pytest.mark.parametrize(("make", "words"), list(FOREIGN_MODELS.values()), ids=list(FOREIGN_MODELS))
def test_a_foreign_model_file_is_one_line_with_the_rebuild_command(tmp_path, make, words):
    path = tmp_path / "models" / "coarse_fine.pt"
    path.parent.mkdir()
    make(path)
    with pytest.raises(InputError) as info:
        TrainedModel.load(path)
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message and len(message) < 400
    assert message.startswith(f"{path}: ") and words in message
    assert message.endswith(f"; rebuild it with: snakemake --cores 1 --force {path}")
    assert not (tmp_path / "models" / "coarse_fine.pt.sprung").exists()  # weights_only: no code ever runs


def test_a_missing_model_file_says_how_to_build_it(tmp_path):
    with pytest.raises(InputError, match="missing.pt: model file does not exist; build it with: snakemake --cores 1"):
        TrainedModel.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("kind", ["mlp", "gnn"])
def test_predict_is_the_same_whatever_the_chunk_size(kind):
    trained = small_trained(kind)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(5, 4, 3)).astype(np.float32)
    scales = rng.uniform(0.5, 1.0, size=(5, 4, 2)).astype(np.float32)
    interp = rng.normal(size=(5, 4, 2)).astype(np.float32)
    graph = mean_adjacency(SQUARE, 4)
    whole = trained.predict(features, scales, interp, graph)
    for chunk_nodes in (1, 8, 9):  # one frame, two frames, two frames with a short last chunk
        assert np.array_equal(trained.predict(features, scales, interp, graph, chunk_nodes=chunk_nodes), whole)


def test_the_mlp_takes_frames_as_it_takes_rows_bit_for_bit():
    # why inference needs no reshape for the mlp: (frames, N, K) gives the very bits of (frames * N, K)
    net = small_trained("mlp").network
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(6, 50, 3)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(net(x), net(x.reshape(-1, 3)).reshape(6, 50, -1))


def test_infer_covers_every_frame_once_and_restores_the_mode():
    net = small_trained("mlp").network.train()
    seen = []
    for chunk, out in infer(net, lambda c: torch.zeros(c.stop - c.start, 4, 3), 7, 4, chunk_nodes=12):
        assert not net.training and not out.requires_grad and out.shape == (chunk.stop - chunk.start, 4, 2)
        seen += range(chunk.start, chunk.stop)
    assert seen == list(range(7)) and net.training
