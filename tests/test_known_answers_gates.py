"""Known answers for gates of every kind, on outside models built here (no download): a dense
two-gate model, a PLE-like structured gate, and their reports (issue 21).  Expected values come
from closed forms, numpy and sklearn, never from the code under test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score
from torch import nn

from analysis.records import GateSpec, record
from analysis.report import build_report, write_report

D, E, H = 3, 4, 5
DOMAINS = ["books", "music", "video"]
# gate 1: expert 1 gets 20 % of the weight on every row but is never the largest; expert 3 none
P1 = np.array([[0.5, 0.2, 0.3, 0.0], [0.3, 0.2, 0.5, 0.0], [0.5, 0.2, 0.3, 0.0]])
# gate 2 (the next layer): another fixed mix per domain
P2 = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]])


class FixedGate(nn.Module):
    """A gate whose output is a fixed probability row per domain: one-hot [B, D] @ P [D, E]."""

    def __init__(self, p: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(p, dtype=torch.float32))

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        return onehot @ self.p  # [B, E]


class TwoGateModel(nn.Module):
    """Two dense MoE layers in sequence, each with its own gate over 4 linear experts."""

    def __init__(self) -> None:
        super().__init__()
        self.layer0_experts = nn.ModuleList(nn.Linear(2, H) for _ in range(E))
        self.layer1_experts = nn.ModuleList(nn.Linear(H, H) for _ in range(E))
        self.gate0, self.gate1 = FixedGate(P1), FixedGate(P2)
        self.head = nn.Linear(H, 1)

    def forward(self, x: dict) -> torch.Tensor:
        g0, g1 = self.gate0(x["onehot"]), self.gate1(x["onehot"])  # [B, E] each
        h = torch.stack([m(x["feats"]) for m in self.layer0_experts], 1)  # [B, E, H]
        h = (g0.unsqueeze(-1) * h).sum(1)  # [B, H]
        h = (g1.unsqueeze(-1) * torch.stack([m(h) for m in self.layer1_experts], 1)).sum(1)
        return torch.sigmoid(self.head(h)).squeeze(1)  # [B]


def _batches(n: int = 600, bs: int = 100, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    dom = rng.integers(0, D, n)
    y = rng.integers(0, 2, n)
    feats = torch.tensor(rng.normal(size=(n, 2)), dtype=torch.float32)
    out = []
    for i in range(0, n, bs):
        d = torch.tensor(dom[i : i + bs])
        x = {"onehot": nn.functional.one_hot(d, D).float(), "feats": feats[i : i + bs]}
        out.append((x, torch.tensor(y[i : i + bs]), d))
    return out


@pytest.fixture(scope="module")
def two_gate(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("two-gate")
    rec = record(
        TwoGateModel(),
        _batches(),
        gates={
            "layer0": GateSpec(modules=("gate0",), hyper={}, layer=0),
            "layer1": GateSpec(modules=("gate1",), hyper={}, layer=1),
        },
        experts={
            "layer0": [f"layer0_experts.{i}" for i in range(E)],
            "layer1": [f"layer1_experts.{i}" for i in range(E)],
        },
        out=out / "rec",
        domains=DOMAINS,
        domain=lambda b: b[2],
        label=lambda b: b[1],
        sample_size=50,
    )
    report = build_report(rec.path, sample_size=50, embedding="pca", cache_dir=out / "c")
    return rec, report, out


def test_dense_expert_with_weight_but_never_top_is_not_dead(two_gate):
    rec, report, _ = two_gate
    assert rec.meta.gate("layer0").kind == "dense"
    g0 = report.gates[0]
    assert g0["declaration"]["name"] == "layer0"
    dom = np.concatenate([b[2].numpy() for b in _batches()])
    # expert 1 is never the arg-max of a row ...
    assert not (P1[dom].argmax(axis=1) == 1).any()
    work = g0["summary"]["work"]
    # ... yet its share of the work is its gate weight: 0.2 on every row (closed form)
    assert work["notion"] == "gate weight"
    assert work["share"][1] == pytest.approx(0.2, abs=1e-6)
    np.testing.assert_allclose(work["share"], P1[dom].mean(axis=0), atol=1e-6)  # numpy oracle
    dead = [a for a in report.alarms if a["code"] == "dead_expert"]
    # the only dead expert of layer 0 is the zero-weight one, named by its recorded name
    assert [(a["expert"], a["title"]) for a in dead] == [(3, "layer0_experts.3 is unused")]
    assert "model.beta" not in dead[0]["message"]  # not a cesaa model: no cesaa settings
    assert g0["summary"]["dead_experts"] == [3]
    # no alarm left undecided: the record declares the model has no alpha
    assert not [a for a in report.alarms if a["level"] == "unchecked"]


def test_every_gate_is_analysed_in_json_and_html(two_gate):
    rec, report, out = two_gate
    written = write_report(report, out / "report", formats=("html", "json"), static=())
    data = json.loads(written["json"].read_text())
    assert [g["declaration"]["name"] for g in data["gates"]] == ["layer0", "layer1"]
    dom = np.concatenate([b[2].numpy() for b in _batches()])
    np.testing.assert_allclose(
        data["gates"][1]["summary"]["work"]["share"], P2[dom].mean(axis=0), atol=1e-6
    )
    page = written["html"].read_text()
    assert "<h3>gate layer0</h3>" in page and "<h3>gate layer1</h3>" in page
    assert "fig-gate_layer1" in page and "fig-cross_layer0_layer1" in page


def test_cross_gate_information_matches_sklearn(two_gate):
    rec, report, _ = two_gate
    (c,) = report.cross_gates
    assert (c["first"], c["second"]) == ("layer0", "layer1")
    dom = np.concatenate([b[2].numpy() for b in _batches()])
    a, b = P1[dom].argmax(axis=1), P2[dom].argmax(axis=1)
    assert c["mi"] == pytest.approx(mutual_info_score(a, b), abs=1e-6)
    counts = np.zeros((E, E))
    np.add.at(counts, (a, b), 1)
    assert np.asarray(c["counts"]).tolist() == counts.astype(int).tolist()
    ceiling = min(entropy(np.bincount(a)), entropy(np.bincount(b)))
    assert c["mi_ceiling"] == pytest.approx(ceiling, abs=1e-9)


class PLELike(nn.Module):
    """One PLE level: 2 specific experts per domain and 1 shared; domain d's gate is a fixed
    softmax over its own 2 specific experts and the shared one."""

    def __init__(self) -> None:
        super().__init__()
        self.gates = nn.ModuleList(
            FixedGate(np.tile(np.array([[0.5, 0.3, 0.2]]), (D, 1))) for _ in range(D)
        )
        self.head = nn.Linear(D, 1)

    def forward(self, x: dict) -> torch.Tensor:
        for g in self.gates:
            g(x["onehot"])
        return torch.sigmoid(self.head(x["onehot"] + x["feats"][:, :1])).squeeze(1)


def test_structured_gate_reports_its_built_in_information(tmp_path):
    columns = tuple((2 * d, 2 * d + 1, 2 * D) for d in range(D))
    rec = record(
        PLELike(),
        _batches(),
        gates={
            "gate": GateSpec(
                modules=tuple(f"gates.{d}" for d in range(D)),
                per_domain=True,
                columns=columns,
                num_experts=2 * D + 1,
                hyper={},
            )
        },
        out=tmp_path / "rec",
        domains=DOMAINS,
        domain=lambda b: b[2],
        label=lambda b: b[1],
    )
    g = rec.meta.primary
    assert (g.kind, g.reach) == ("structured", columns)
    report = build_report(rec.path, sample_size=0, embedding="pca", cache_dir=tmp_path / "c")
    s = report.gates[0]["summary"]
    counts = np.bincount(np.concatenate([b[2].numpy() for b in _batches()]), minlength=D)
    # closed form: s / (s + sh) H(D) with s = 2 specific and sh = 1 shared expert per domain
    assert s["mi_built_in"] == pytest.approx(2 / 3 * entropy(counts), abs=1e-9)
    assert report.summary["mi_built_in"] == s["mi_built_in"]
    # a domain's gate weighs its specific experts 0.5 / 0.3 and the shared one 0.2 on every row:
    # the measured I(D;E) (numpy, from the joint) is above the built-in part
    joint = np.zeros((D, 2 * D + 1))
    for d in range(D):
        joint[d, list(columns[d])] = counts[d] * np.array([0.5, 0.3, 0.2])
    p = joint / joint.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(p / p.sum(1, keepdims=True) / p.sum(0, keepdims=True))
    mi = float(np.sum(np.where(p > 0, p * ratio, 0.0)))
    assert s["mi_soft"] == pytest.approx(mi, abs=1e-5)
    assert s["mi_soft"] > s["mi_built_in"]  # 0.8 of each row on its own experts, not 2/3
    # other domains' specific experts are out of reach, not dead
    assert s["dead_experts"] == [] and not [a for a in report.alarms if a["code"] == "dead_expert"]
    # each expert's even share over the rows that reach it is 1/3
    np.testing.assert_allclose(s["work"]["fair"], np.full(2 * D + 1, 1 / 3), atol=1e-12)
    assert math.isclose(s["work"]["share"][2 * D], 0.2, abs_tol=1e-6)
    html = report.to_html()
    assert "built in by the reach" in html
