"""The record's gate declarations: kind, k, reach, shared experts, hyperparameters, and old
records without them (inferred, said so)."""

from __future__ import annotations

import json

import pytest

from analysis.records import ExpertInfo, GateInfo, GateSpec, RecordMeta, open_record
from analysis.records.checkpoint import checkpoint_meta
from analysis.records.format import GATE_KINDS
from cesaa.checkpoint import load_checkpoint
from tests.test_records import E, _record
from tests.test_records_writer import _arrays, _write

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_gate_kinds_are_the_three_declared_ones():
    assert GATE_KINDS == ("dense", "sparse", "structured")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "topk"}, "kind must be one of"),
        ({"kind": "sparse"}, "a sparse gate needs top_k"),
        ({"kind": "dense", "top_k": 2}, "declares a sparse gate"),
        ({"kind": "structured"}, "a structured gate needs reach"),
        ({"kind": "structured", "reach": ((0, 9),)}, r"reach names experts \[9\]"),
        ({"kind": "dense", "hyper": {"alpha": "big"}}, r"hyper\['alpha'\] must be a number"),
    ],
)
def test_bad_gate_declarations_are_named(kw, match):
    experts = tuple(ExpertInfo(f"e{i}") for i in range(E))
    with pytest.raises(ValueError, match=match):
        GateInfo("gate", experts, **kw)


def test_reach_needs_one_entry_per_domain():
    experts = tuple(ExpertInfo(f"e{i}") for i in range(E))
    g = GateInfo("gate", experts, kind="structured", reach=((0, 1), (2, 3)))
    with pytest.raises(ValueError, match="reach has 2 entries for 3 domains"):
        RecordMeta(model_name="m", domains=("a", "b", "c"), gates=(g,))


def test_declarations_round_trip_through_record_json(tmp_path):
    rec = _write(tmp_path / "r", _arrays(50), [0, 50])
    raw = json.loads((tmp_path / "r" / "record.json").read_text())
    # _meta declares no kind: the writer stores what was inferred, and says so
    g0, g1 = raw["gates"]
    assert (g0["kind"], g0["top_k"], g0["inferred"]) == ("sparse", 2, ["kind"])
    assert (g1["kind"], g1["top_k"], g1["hyper"]) == ("dense", None, None)
    assert rec.meta.gates == RecordMeta.from_dict(raw).gates


def test_old_record_without_declarations_opens_with_inferred_kinds(tmp_path):
    experts = (
        ExpertInfo("s_a", "specific", "a"),
        ExpertInfo("s_b", "specific", "b"),
        ExpertInfo("s_c", "specific", "c"),
        ExpertInfo("sh", "shared"),
    )
    rec = _write(tmp_path / "r", _arrays(50), [0, 50])
    path = tmp_path / "r" / "record.json"
    raw = json.loads(path.read_text())
    for g in raw["gates"]:  # as written before kinds were declared
        for key in ("kind", "reach", "hyper", "family", "inferred"):
            g.pop(key)
    raw["gates"][1]["experts"] = [
        {"name": x.name, "kind": x.kind, "owner": x.owner} for x in experts
    ]
    path.write_text(json.dumps(raw))
    old = open_record(tmp_path / "r", check="footer")
    sparse, structured = old.meta.gates
    assert (sparse.kind, sparse.inferred, sparse.hyper) == ("sparse", ("kind",), None)
    assert structured.kind == "structured"
    assert structured.inferred == ("kind", "reach")
    # each domain reaches its own specific expert and the shared one
    assert structured.reach == ((0, 3), (1, 3), (2, 3))
    assert rec.meta.gates[0].hyperparameter("alpha") is None


def test_hooks_declare_dense_sparse_and_structured_gates(tmp_path):
    rec = _record(
        tmp_path,
        {
            "dense": GateSpec(modules=("gate",), hyper={}),
            "sparse": GateSpec(modules=("gate",), top_k=2, hyper={"beta": 0.1}),
            "first_two": GateSpec(
                modules=("gate",), columns=((0, 1, 2, 3),), num_experts=6, gate_kind=None
            ),
        },
        experts={"dense": [f"experts.{i}" for i in range(E)]},
    )
    dense, sparse, part = rec.meta.gates
    assert (dense.kind, dense.top_k, dense.hyper, dense.inferred) == ("dense", None, {}, ())
    assert (sparse.kind, sparse.top_k, sparse.hyperparameter("beta")) == ("sparse", 2, 0.1)
    assert sparse.hyperparameter("alpha") is None
    # one gate module writes 4 of 6 columns for every domain: structured, same reach everywhere
    assert part.kind == "structured"
    assert part.reach == ((0, 1, 2, 3),) * 3
    assert dense.expert_names == [f"experts.{i}" for i in range(E)]


def test_cesaa_checkpoint_record_declares_its_gate():
    ckpt = load_checkpoint(ROOT / "checkpoints" / "cesaa")
    cfg = ckpt.meta["model"]["config"]
    g = checkpoint_meta(ckpt, (), "src", "test").primary
    assert (g.kind, g.top_k, g.family) == ("sparse", cfg["top_k"], "cesaa")
    assert g.hyper == {"alpha": cfg["alpha"], "beta": cfg["beta"]}
    assert g.shared == []  # cesaa's shared experts are ungated: the record's always_on
    mmoe = checkpoint_meta(load_checkpoint(ROOT / "checkpoints" / "mmoe"), (), "src", "test")
    assert (mmoe.primary.kind, mmoe.primary.top_k, mmoe.primary.hyper) == ("dense", None, {})
    assert mmoe.always_on == ()


def test_cesaa_ple_record_declares_a_structured_gate():
    from types import SimpleNamespace

    from test_baselines import D as PD
    from test_baselines import build

    model = build("ple", ple_levels=1, ple_specific=2, ple_shared=1)
    domains = tuple(f"d{i}" for i in range(PD))
    ckpt = SimpleNamespace(
        model=model,
        domain_names=domains,
        model_config=model.cfg if hasattr(model, "cfg") else None,
        meta={"model": {}, "data": {}},
    )
    g = checkpoint_meta(ckpt, (), "src", "test").primary
    assert (g.kind, g.top_k, g.hyper) == ("structured", None, {})
    shared = 2 * PD  # global index: D x 2 specific, then the shared one
    assert g.shared == [shared]
    assert g.reach == tuple((2 * d, 2 * d + 1, shared) for d in range(PD))


@pytest.mark.parametrize("count", [E - 1, E + 1])
def test_experts_of_the_wrong_count_name_the_gate_and_both_counts(tmp_path, count):
    """experts= with one module too few or too many failed with a bare IndexError/RuntimeError."""
    experts = {"gate": [f"experts.{i % E}" for i in range(count)]}
    with pytest.raises(
        ValueError,
        match=rf"experts\['gate'\] names {count} modules but gate 'gate' has {E} experts",
    ):
        _record(
            tmp_path,
            {"gate": GateSpec(modules=("gate",), top_k=2)},
            experts=experts,
            sample_size=40,
        )
    with pytest.raises(ValueError, match=r"experts names gates \['nope'\] that are not in gates"):
        _record(tmp_path, {"gate": GateSpec(modules=("gate",), top_k=2)}, experts={"nope": []})
