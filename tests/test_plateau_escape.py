"""MMoE and PLE leave the plateau of product-structured data at default settings (issue 27), and
the plateau benchmark's capacity goal.

The plateau level is derived from the generator, not from a model: the best a model reaches
without the user x item product is what the main effects give (a logistic regression on one-hots
of user, item and domain, sklearn), and a run "beats the plateau" when its test AUC exceeds that
level by three standard errors of an AUC at that level on the test rows (Hanley & McNeil 1982).
The fix (``ModelConfig``: per-domain towers start tied, PLE's gates start at 0.8 on the shared
experts, HMoE's label-space gate at 0.9 on the own domain) was chosen on generator seed 0; this
test uses seed 1.  With the old initialization PLE (0.5386) and HMoE (0.5309) end their 30 epochs
below this seed's threshold (0.5572); MMoE passes with either (0.5841 old, 0.5758 now).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

SEED = 1  # the fix was chosen on seed 0
ROWS = 40_000


def hanley_mcneil_se(a: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC ``a`` estimated from n_pos positives and n_neg negatives."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)
    return math.sqrt(var / (n_pos * n_neg))


@pytest.fixture(scope="module")
def table():
    from cesaa.data import load_data

    return load_data(f"synthetic:rows={ROWS},structure=multiplicative,per_domain=1,seed={SEED}")


@pytest.fixture(scope="module")
def plateau(table) -> float:
    """Main effects only: logistic regression on one-hots of user, item and domain (train split),
    its test AUC; plus three standard errors at that level."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder

    names = list(table.spec.cat_names)
    cols = [names.index("user_id"), names.index("item_id")]

    def design(part):
        return np.column_stack([part.cat[:, cols].numpy(), part.domain.numpy()])

    enc = OneHotEncoder(handle_unknown="ignore").fit(design(table.train))
    x_tr, x_te = (sparse.csr_matrix(enc.transform(design(p))) for p in (table.train, table.test))
    fit = LogisticRegression(max_iter=2000).fit(x_tr, table.train.label.numpy())
    y = table.test.label.numpy()
    level = roc_auc_score(y, fit.predict_proba(x_te)[:, 1])
    n_pos = int(y.sum())
    margin = 3 * hanley_mcneil_se(level, n_pos, len(y) - n_pos)
    assert table.truth["oracle_auc"] > level + 0.25  # the product carries the signal
    return level + margin


@pytest.mark.slow  # default trainings of 30 epochs on 32k rows: about a minute each
@pytest.mark.parametrize("model", ["mmoe", "ple", "hmoe"])
def test_default_training_leaves_the_plateau(table, plateau, model) -> None:
    from cesaa.config import TrainConfig
    from cesaa.models import default_config
    from cesaa.train import train

    res = train(default_config(model), TrainConfig(seed=SEED, device="cpu"), table)
    assert res.test_metrics["auc"] > plateau, (model, res.test_metrics["auc"], plateau)
    assert res.end is not None and res.end.verdict != "plateau"


def test_hanley_mcneil_known_values() -> None:
    # AUC 0.5: Q1 = 1/3, Q2 = 1/3, var = (0.25 + (n-1)/12 * 2) / n^2 for n_pos = n_neg = n
    n = 100
    assert hanley_mcneil_se(0.5, n, n) == pytest.approx(math.sqrt((0.25 + 2 * (n - 1) / 12) / n**2))
    assert hanley_mcneil_se(0.9, 50, 50) < hanley_mcneil_se(0.6, 50, 50)


def test_capacity_goal_compares_with_the_best_model_no_larger() -> None:
    from bench.plateau import capacity_goal

    auc = {"small": 0.69, "mid": 0.62, "big": 0.71, "bigger": 0.705}
    params = {"small": 10, "mid": 20, "big": 30, "bigger": 40}
    goal = capacity_goal(auc, params, explained=("mid",))
    assert goal["small"] == {"best": "small", "best_auc": 0.69, "gap": 0.0, "state": "met"}
    assert goal["mid"]["best"] == "small" and goal["mid"]["gap"] == pytest.approx(-0.07)
    assert goal["mid"]["state"] == "explained"
    assert goal["big"]["state"] == "met" and goal["big"]["best"] == "big"
    assert goal["bigger"]["best"] == "big" and goal["bigger"]["state"] == "met"  # -0.005
    assert capacity_goal(auc, params, explained=())["mid"]["state"] == "missed"
    # equal capacity counts as a peer
    tie = capacity_goal({"a": 0.7, "b": 0.68}, {"a": 5, "b": 5}, explained=())
    assert tie["b"]["best"] == "a" and tie["b"]["state"] == "missed"


def test_every_explained_model_is_explained_on_its_page() -> None:
    from pathlib import Path

    from bench.plateau import EXPLAINED, HEADING, PAGE

    text = (Path(__file__).resolve().parents[1] / PAGE).read_text(encoding="utf-8")
    heading = "### " + HEADING
    assert heading in text, heading
    section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    for model in EXPLAINED:
        assert f"`{model}`" in section, model


def test_mmoes_user_item_interaction_at_init_is_below_the_mlps_unless_the_input_is_normalized() -> (
    None
):
    """What docs/model.md gives as the reason MMoE leaves the plateau late: the product is learned
    by growing the logit's user x item interaction from its value at init, and with the embeddings
    at std 0.05 next to standard-normal numeric columns MMoE starts with less of it than the MLP
    (its D experts averaged under near-uniform gates); a BatchNorm on the input
    (``input_norm="batch"``) lifts it far above.  Untrained models, a generator seed no
    measurement was chosen on."""
    import torch

    from bench.plateau_init import interaction_rms
    from cesaa.data import load_data
    from cesaa.models import build_model, default_config

    data = load_data("synthetic:rows=8000,structure=multiplicative,per_domain=1,seed=3")
    names = list(data.spec.cat_names)

    def at_init(name: str, **kw) -> float:
        torch.manual_seed(3)
        model = build_model(default_config(name, **kw), data.spec)
        return interaction_rms(model, data.train, names)

    mlp, mmoe = at_init("mlp"), at_init("mmoe")
    assert default_config("mmoe").input_norm == "none"  # the paper's input (docs/model.md)
    assert 0 < 2 * mmoe < mlp
    assert at_init("mmoe", input_norm="batch") > 5 * mlp


def test_mechanism_weights_recover_a_hand_built_mix_with_per_domain_offsets() -> None:
    from bench.plateau_parts import mechanism_weights

    rng = np.random.default_rng(0)
    n = 600
    shared, own = rng.standard_normal(n), rng.standard_normal(n)
    domain = np.arange(n) % 3
    offset = np.array([-1.0, 0.3, 2.0])[domain]  # per-domain intercepts are not the mechanisms
    b_shared, b_own = mechanism_weights(2.0 * shared + 0.5 * own + offset, shared, own, domain)
    assert b_shared == pytest.approx(2.0, abs=1e-10)
    assert b_own == pytest.approx(0.5, abs=1e-10)
    b_shared, b_own = mechanism_weights(-shared + offset, shared, own, domain)
    assert (b_shared, b_own) == (pytest.approx(-1.0, abs=1e-10), pytest.approx(0.0, abs=1e-10))


def test_planted_parts_are_the_mechanisms_of_each_test_rows_logit() -> None:
    """The generator's true logit of a test row is intercept + strength * (shared + own) /
    sqrt(2) (one shared and one own mechanism per domain): the parts must rebuild it."""
    from bench.plateau_parts import planted_parts
    from cesaa.benchmark.protocol import load_source
    from cesaa.data.splits import make_split
    from cesaa.data.synthetic import make_planted_frame

    rows, seed = 3000, 2
    data = load_source(f"synthetic:rows={rows},structure=multiplicative,per_domain=1,seed={seed}")
    shared, own = planted_parts(rows, seed, data)
    planted = make_planted_frame(
        rows, mechanisms_per_domain=1, seed=seed, structure="multiplicative"
    )
    truth = planted.logit[make_split("random", rows, seed=0)[2].numpy()]
    rebuilt = 2.5 * (shared + own) / math.sqrt(2)  # strength 2.5, the generator's default
    np.testing.assert_allclose(truth - rebuilt, (truth - rebuilt).mean(), atol=1e-5)
    assert np.corrcoef(shared, own)[0, 1] < 0.2  # two different products, not one counted twice
    with pytest.raises(RuntimeError, match="does not match the loaded test split"):
        planted_parts(rows, seed + 1, data)
