"""Checkpoint errors name the file and the field at fault (issue #20, items 10-11)."""

from __future__ import annotations

import json

import pytest

from perfmamba.models import CheckpointError, build_model, load_model, save_model


@pytest.fixture
def ckpt(tmp_path):
    return save_model(build_model("mamba1-tiny"), tmp_path / "m")  # 4 layers, d_state 16


def _edit(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_truncated_weights_name_the_file(ckpt):
    weights = ckpt / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: cannot read the weights"):
        load_model(ckpt)


@pytest.mark.parametrize("states, message", [
    ("abc", "layer_d_state must be a list of integers, got 'abc'"),
    ([13, 8], "layer_d_state has 2 entries; config.json has n_layer 4"),
    ([0, 16, 16, 16], "every layer needs at least one state"),
    ([13, 13, 13, 13], "layer_d_state is 13 in every layer, but config.json has d_state 16"),
])
def test_sidecar_problems_are_blamed_on_the_sidecar(ckpt, states, message):
    _edit(ckpt / "perfmamba.json", lambda d: d.update(layer_d_state=states))
    with pytest.raises(CheckpointError) as e:
        load_model(ckpt)
    assert str(e.value).startswith(str(ckpt / "perfmamba.json")) and message in str(e.value)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(d_model="abc"), "config.json: d_model must be an integer, got 'abc'"),
    (lambda d: d.pop("n_layer"), "config.json: missing key 'n_layer'"),
])
def test_config_problems_name_the_field(ckpt, change, message):
    _edit(ckpt / "config.json", change)
    with pytest.raises(CheckpointError, match=message):
        load_model(ckpt)
