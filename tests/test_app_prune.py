"""AppTest of the Prune page, and a pruned checkpoint on every page (Compare: against its source).

A tiny CESAA (4 experts, 3 domains, 6,000 synthetic rows) trained for three epochs keeps the page's
full curve (every criterion, every budget) to seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from apptest_support import (  # noqa: F401  (fixtures and the skip mark are used by name)
    PAGES,
    _app_on_path,
    _env,
    arr,
    assert_clean,
    charts,
    run_page,
)

SOURCE = "synthetic:rows=6000,domains=3,seed=0"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained tiny checkpoint and its merged-and-pruned edit, in one folder."""
    from cesaa.checkpoint import load_checkpoint
    from cesaa.config import TrainConfig
    from cesaa.data import load_data
    from cesaa.models.registry import default_config
    from cesaa.pruning import ExpertPlan, apply_plan, save_edited_checkpoint
    from cesaa.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("prune_app")
    data = load_data(SOURCE)
    cfg = default_config(
        "cesaa",
        expert_hidden=(16,),
        expert_dim=8,
        tower_hidden=(8,),
        embed_dim=8,
        num_experts=4,
        top_k=2,
    )
    tc = TrainConfig(epochs=3, batch_size=256, lr=3e-3, seed=0, min_steps=0)
    train(cfg, tc, data, root / "tiny")
    src = load_checkpoint(root / "tiny")
    plan = ExpertPlan(remove=(3,), merge=((0, 1),), criterion="test")
    save_edited_checkpoint(src, apply_plan(src.model, plan), plan, root / "tiny-pruned")
    torch.set_num_threads(threads)
    return root


@pytest.fixture(autouse=True)
def _tiny_root(monkeypatch, runs):
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(runs))


def test_prune_page_shows_the_analysis_curve(runs):
    from analysis.prune_plans import planning_sample, prediction_error, prune_curve
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data.locate import open_checkpoint_data

    path = runs / "tiny"
    at = run_page("prune", path, prn_keep=2)
    assert_clean(at)
    assert at.title[0].value == "Prune"
    assert "could do without, and what that would cost" in at.markdown[0].value
    ckpt = load_checkpoint(path)
    data = open_checkpoint_data(ckpt.meta, ckpt.path)
    curve = prune_curve(ckpt.model, planning_sample(data.val, 4000), data.test, ckpt.domain_names)
    fig = charts(at)["prn_curve"]
    names = [t["name"] for t in fig["data"]]
    assert names == [
        f"{c}: {w}" for c in ("knockout", "reap", "merge") for w in ("measured", "predicted")
    ]
    for t in fig["data"][::2]:
        part = curve[curve["criterion"] == t["name"].split(":")[0]].sort_values("keep")
        np.testing.assert_allclose(arr(t["y"]), part["delta_auc"], atol=1e-12)
    shown = at.dataframe[0].value
    want = curve[curve["keep"] == 2]
    assert list(shown["criterion"]) == list(want["criterion"])
    np.testing.assert_allclose(shown["delta_auc"], want["delta_auc"], atol=1e-12)
    np.testing.assert_allclose(shown["predicted_delta_auc"], want["predicted_delta_auc"])
    best = prediction_error(curve)["criterion"].iloc[0]
    assert any(f"predicts its cost best:** {best}" in m.value for m in at.markdown)
    evidence = at.dataframe[-1].value
    assert list(evidence["expert"]) == [f"expert {i}" for i in range(4)]


def test_the_page_writes_the_pruned_checkpoint(runs):
    from cesaa.checkpoint import load_checkpoint

    at = run_page("prune", runs / "tiny", prn_keep=3)
    at.button(key="prn_write").click().run()
    assert_clean(at)
    written = [s.value for s in at.success]
    assert written and "Written to" in written[0]
    out = written[0].split("`")[1]
    assert load_checkpoint(out).model_config.num_experts in (3, 4)  # pruned or merged


@pytest.mark.parametrize("page", [*PAGES, "ablations", "prune", "evolution", "train"])
def test_a_pruned_checkpoint_opens_on_every_page(runs, page):
    # the Embeddings page shows PCA without fitting UMAP (its first fit compiles for a minute)
    at = run_page(page, runs / "tiny-pruned", emb_auto=False)
    assert_clean(at)


def test_compare_shows_the_pruned_checkpoint_against_its_source(runs):
    from cesaa.checkpoint import load_checkpoint
    from cesaa.data import load_data
    from cesaa.evaluation import evaluate

    at = run_page("compare", runs / "tiny-pruned")
    at.selectbox(key="cmp_other").set_value(str((runs / "tiny").resolve())).run()
    assert_clean(at)
    table = at.dataframe[0].value  # per-domain metrics of A (pruned) and B (its source)
    data = load_data(SOURCE)
    for name, col in (("tiny-pruned", "A"), ("tiny", "B")):
        ckpt = load_checkpoint(runs / name)
        want = evaluate(ckpt.model, data.test, ckpt.domain_names)["auc"]
        assert table.loc["overall", ("AUC (higher is better)", col)] == pytest.approx(
            want, abs=1e-9
        )
    assert any("A has 3, B 4" in i.value for i in at.info)
