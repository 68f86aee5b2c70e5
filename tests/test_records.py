"""Routing records: hook capture (known gate statistics, gates returned directly, hooks removed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis.records import (
    GateSpec,
    record,
)

D, E, H = 3, 4, 5
# known gate of each domain (rows sum to 1); the hand-written MMoE's gate reproduces it exactly
P = np.array([[0.6, 0.25, 0.1, 0.05], [0.1, 0.1, 0.45, 0.35], [0.25, 0.25, 0.25, 0.25]])


class HandMMoE(nn.Module):
    """A small MMoE written by hand: softmax gate on the domain one-hot, 4 linear experts."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(D + 2, H) for _ in range(E))
        self.gate_logits = nn.Linear(D, E, bias=False)
        self.gate = nn.Softmax(dim=1)
        self.tower = nn.Linear(H, 1)
        with torch.no_grad():  # softmax(log P[d]) = P[d]
            self.gate_logits.weight.copy_(torch.tensor(np.log(P).T, dtype=torch.float32))

    def forward(self, x: dict) -> torch.Tensor:
        inp = torch.cat([x["onehot"], x["feats"]], dim=1)  # [B, D + 2]
        g = self.gate(self.gate_logits(x["onehot"]))  # [B, E]
        out = torch.stack([ex(inp) for ex in self.experts], dim=1)  # [B, E, H]
        return torch.sigmoid(self.tower((g.unsqueeze(-1) * out).sum(1))).squeeze(1)  # [B]


def _batches(n: int = 300, bs: int = 64, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    dom = rng.integers(0, D, n)
    y = rng.integers(0, 2, n)
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 2, generator=gen)
    out = []
    for i in range(0, n, bs):
        d = torch.tensor(dom[i : i + bs])
        x = {"onehot": nn.functional.one_hot(d, D).float(), "feats": feats[i : i + bs]}
        out.append((x, torch.tensor(y[i : i + bs]), d))
    return out


def _record(tmp_path, gates, **kw):
    kw.setdefault("experts", {next(iter(gates)): [f"experts.{i}" for i in range(E)]})
    torch.manual_seed(0)
    return record(
        HandMMoE(),
        _batches(),
        gates=gates,
        out=tmp_path / "rec",
        domains=["a", "b", "c"],
        domain=lambda b: b[2],
        label=lambda b: b[1],
        **kw,
    )


def _known_counts() -> np.ndarray:
    dom = np.concatenate([b[2].numpy() for b in _batches()])
    return np.bincount(dom, minlength=D)


def test_hooks_give_the_known_gate_statistics(tmp_path):
    rec = _record(tmp_path, {"gate": GateSpec(modules=("gate",), top_k=2)}, sample_size=40)
    st = rec.stats["gate"]
    count = _known_counts()
    assert st.count.tolist() == count.tolist()
    np.testing.assert_allclose(st.prob_sum / count[:, None], P, atol=1e-6)
    # top-2 of each domain's known gate, every row of that domain
    top2 = np.argsort(-P, axis=1, kind="stable")[:, :2]
    expected = np.zeros((D, E), np.int64)
    for d in range(D):
        expected[d, top2[d]] = count[d]
    assert st.select_count.tolist() == expected.tolist()
    ent = -(P * np.log(P)).sum(axis=1)
    np.testing.assert_allclose(st.entropy_sum / count, ent, rtol=1e-5)
    # soft MI from the closed form: I(D;E) = H(E) - H(E|D) with p(d) = count / N
    pd_ = count / count.sum()
    pe = pd_ @ P
    mi = -(pe * np.log(pe)).sum() - (pd_ * ent).sum()
    from analysis.measures import mutual_information

    assert mutual_information(st) == pytest.approx(mi, rel=1e-5)
    assert rec.meta.primary.experts[0].name == "experts.0"
    s = rec.sample()
    assert s.num_rows == 40 and len(s["out.0"][0]) == H


def test_logits_with_declared_top_k_match_softmax_outputs(tmp_path):
    a = _record(tmp_path / "a", {"g": GateSpec(modules=("gate",), top_k=2)})
    b = _record(tmp_path / "b", {"g": GateSpec(modules=("gate_logits",), kind="logits", top_k=2)})
    assert a.stats["g"].isclose(b.stats["g"], rtol=1e-5, atol=1e-6)


def test_models_that_return_gates_directly(tmp_path):
    class Returns(HandMMoE):
        def forward(self, x):
            g = self.gate(self.gate_logits(x["onehot"]))
            return super().forward(x), g

    rec = record(
        Returns(),
        _batches(),
        gates={"gate": GateSpec(output=lambda out: out[1])},
        out=tmp_path / "rec",
        domains=["a", "b", "c"],
        domain=lambda b: b[2],
        label=lambda b: b[1],
        prediction=lambda out, b, d: out[0],
    )
    np.testing.assert_allclose(rec.stats["gate"].prob_sum / _known_counts()[:, None], P, atol=1e-6)


def test_hooks_are_removed_and_mode_restored(tmp_path):
    model = HandMMoE().train()
    record(
        model,
        _batches(),
        gates={"gate": "gate"},
        out=tmp_path / "r",
        domains="abc",
        domain=lambda b: b[2],
        label=lambda b: b[1],
    )
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_module_is_named(tmp_path):
    with pytest.raises(ValueError, match="no module 'gatez'"):
        _record(tmp_path, {"gate": "gatez"})
