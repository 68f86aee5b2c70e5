from __future__ import annotations

import numpy as np
import torch

from analysis.report_inspection import inspection_html, inspection_section
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.registry import build_model, default_config
from cesaa.train import train


def test_section_of_a_trained_run_with_snapshots(tmp_path):
    torch.set_num_threads(1)
    data = load_data("synthetic:rows=3000,domains=3,seed=0")
    cfg = default_config(
        "cesaa", expert_hidden=(8,), expert_dim=4, tower_hidden=(4,), num_experts=4, top_k=2
    )
    tcfg = TrainConfig(epochs=2, batch_size=256, lr=1e-2, routing_snapshots=True)
    model = train(cfg, tcfg, data, tmp_path / "run").model
    names = list(data.domain_names)
    sec = inspection_section(model, data.test, data.encoders, names, tmp_path / "run")
    assert [e["expert"] for e in sec["experts"]] == [0, 1, 2, 3]
    assert sum(e["rows"] for e in sec["experts"]) == 2 * sec["rows"]  # k = 2 experts per row
    dl = np.asarray(sec["swap"]["mean_abs_dlogit"])
    assert dl.shape == (3, 3) and np.allclose(np.diag(dl), 0.0)
    assert [r["epoch"] for r in sec["evolution"]] == [1, 2]
    assert sec["evolution"][-1]["saturation"] == 1.0
    for t in sec["top_values"]:
        assert t["q"] < 0.05 and t["ci_low"] > 0  # only significant over-representation
    page = inspection_html(sec)
    assert "What each expert learned" in page and "Domain swap" in page
    assert "Routing over training" in page and names[0] in page


def test_section_of_a_model_without_a_gate():
    data = load_data("synthetic:rows=1000,domains=2,seed=0")
    model = build_model(default_config("mlp", embed_dim=4), data.spec)
    sec = inspection_section(model, data.test, data.encoders, list(data.domain_names))
    assert "experts" not in sec and "no gate" in sec["notes"]["experts"]
    assert np.asarray(sec["swap"]["mean_tv"]).shape == (2, 2)
    assert "no gate" in inspection_html(sec) and inspection_html(None).startswith("<p")
