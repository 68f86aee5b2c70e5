"""Built-in synthetic multi-domain data with a planted domain -> mechanism structure ("planted").

Generative story (all draws from ``numpy.random.default_rng(seed)``):

- Features: 6 categorical columns (user_id 1000, item_id 500, cat_a 200, cat_b 50, cat_c 20, cat_d 10
  values; user and item popularity Zipf-like) and 4 standard-normal numeric columns.  A row's domain is
  drawn independently of its features, with unequal but comparable domain sizes (weights 1 .. 2).
- K mechanisms.  Mechanism k reads 2 categorical and 2 numeric columns: with random category embeddings
  E_kc [card, r], category biases b_kc and a projection A_k [2, r]::

      z = sum_c E_kc[x_c] / sqrt(2)                       # [N, r]
      w = num[:, T_k] @ A_k / sqrt(2)                     # [N, r]
      f_k = sigmoid(gain * (<z, w> / sqrt(r) + sum_c b_kc[x_c] / sqrt(2)))
      f_k = (f_k - mean) / std                            # each mechanism has unit variance

- Domain d uses the shared mechanism 0 plus ``mechanisms_per_domain`` specific ones (disjoint across
  domains when K allows)::

      logit = intercept + strength * sum_{k in domain(d)} f_k / sqrt(|domain(d)|) + noise * N(0, 1)
      label ~ Bernoulli(sigmoid(logit)),  intercept set so that the mean of sigmoid(logit) = base_rate

**The heterogeneity dial** (``heterogeneity=h`` in [0, 1], the sweep's one knob; ``None`` keeps the
layout above): ``m = mechanisms_per_domain`` common mechanisms (0 .. m-1) that every domain uses, plus
``m`` specific mechanisms per domain, disjoint across domains (K = m + D * m)::

      logit = intercept + strength * (sqrt((1 - h) / m) * sum_{k common} f_k
                                      + sqrt(h / m) * sum_{k specific to d} f_k) + noise * N(0, 1)

The signal keeps unit variance at every h, and h is the share of it that is the domain's own.  At
``h = 0`` every domain draws (features, label) from one distribution (the logit is a function of the
features alone, and the features do not depend on the domain); at ``h = 1`` no two domains share a
mechanism.  ``truth["mechanism_weights"]`` [D, K] holds the weights above.

**Planted groups of domains** (``groups=G``, 1 <= G <= D; ``None``: every domain is its own group):
domain d belongs to group ``d % G`` (``truth["domain_group"]``), and the domain-specific mechanisms
above belong to the group instead: every domain of a group uses the same specific mechanisms, and
no two groups share one (K = m * G + 1 in the default layout, m * (G + 1) with the dial).  Domains
of a group draw (features, label) from one distribution; a router that sends them to the same
experts recovers the groups (``analysis.domain_groups``).  Many domains with few rows each then
still share enough rows per mechanism to learn it (the 40-domain shipped checkpoint: 8 groups).

Because the domain is independent of the features, a model that ignores the domain can only learn the
domain-average of the mechanisms; ``truth`` reports both the oracle AUC and that domain-blind oracle's AUC.

``structure="multiplicative"`` replaces every mechanism by a pure user x item interaction with no main
effects (U_k [users, r], V_k [items, r] standard normal, r = 2; 200 users and 100 items so that a small
table holds enough rows per user and item to learn the factors)::

      f_k = <U_k[user], V_k[item]> / sqrt(r),   then standardized as above

A user's mean over its rows is <U_k[user], popularity-weighted mean of V_k> / sqrt(r): small (the Zipf
item popularity leaves a weak main effect), so almost all the signal is in the product and a model must
grow both factors together from their small initial values: the saddle that makes models sit on a
plateau for several epochs (see ``docs/training.md``).  With exactly centred factors (no main effect at
all) MMoE's plateau outlasted 30 epochs on 32k training rows and 11 on 80k, so they are not centred.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cesaa.data.frame import from_frame
from cesaa.data.mechanisms import (
    assign_mechanisms,
    bilinear,
    dial_weights,
    draw_category,
    intercept_for,
)
from cesaa.data.schema import TableSchema
from cesaa.data.table import MultiDomainData

CATEGORICAL = (
    ("user_id", 1000),
    ("item_id", 500),
    ("cat_a", 200),
    ("cat_b", 50),
    ("cat_c", 20),
    ("cat_d", 10),
)
NUMERIC = ("num_0", "num_1", "num_2", "num_3")
_RANK = 4  # rank of each mechanism's categorical x numeric interaction
_GAIN = 2.0  # sharpness of each mechanism's sigmoid
_T0 = 1_700_000_000  # timestamps: 30 days from here (for the temporal split)
STRUCTURES = ("additive", "multiplicative")
_MULT_CARDS = {"user_id": 200, "item_id": 100}  # multiplicative: fewer users and items


@dataclass
class PlantedFrame:
    """The raw synthetic table plus what generated it.

    ``mechanisms`` [N, K]: each mechanism's standardized value per row; ``logit`` [N]: the true logit
    (before the noise); ``truth``: the JSON-serializable ground truth stored in ``MultiDomainData.truth``.
    """

    frame: pd.DataFrame
    schema: TableSchema
    mechanisms: np.ndarray
    logit: np.ndarray
    truth: dict


def make_planted_frame(
    num_rows: int = 200_000,
    num_domains: int = 4,
    num_mechanisms: int | None = None,
    mechanisms_per_domain: int = 2,
    seed: int = 0,
    *,
    strength: float = 2.5,
    noise: float = 0.5,
    base_rate: float = 0.4,
    structure: str = "additive",
    heterogeneity: float | None = None,
    groups: int | None = None,
) -> PlantedFrame:
    """Generate the planted table.  ``num_mechanisms`` defaults to ``mechanisms_per_domain * D + 1``.

    ``structure``: ``additive`` (categorical x numeric mechanisms, the default) or
    ``multiplicative`` (user x item factor mechanisms without main effects, see the module docstring).
    ``heterogeneity``: the dial from identical domains (0) to disjoint mechanisms (1), see the
    module docstring; it fixes ``num_mechanisms`` to ``m * (G + 1)``.
    ``groups``: G planted groups of domains sharing their specific mechanisms (module docstring).
    """
    if groups is not None and not 1 <= groups <= num_domains:
        raise ValueError(f"groups={groups} must be in [1, domains={num_domains}]")
    g_count = num_domains if groups is None else groups
    group_of = np.arange(num_domains) % g_count  # [D]: domain -> its planted group
    if heterogeneity is not None:
        if not 0.0 <= heterogeneity <= 1.0:
            raise ValueError(f"heterogeneity={heterogeneity} must be in [0, 1]")
        if mechanisms_per_domain < 1:
            raise ValueError("heterogeneity needs mechanisms_per_domain >= 1")
        needed = mechanisms_per_domain * (g_count + 1)
        if num_mechanisms not in (None, needed):
            raise ValueError(
                f"num_mechanisms={num_mechanisms}: with heterogeneity it is m * (G + 1) = {needed}"
                " (G = groups, default the number of domains)"
            )
        num_mechanisms = needed
    if num_mechanisms is None:
        num_mechanisms = mechanisms_per_domain * g_count + 1
    _check_args(
        num_rows, num_domains, num_mechanisms, mechanisms_per_domain, strength, noise, base_rate
    )
    if structure not in STRUCTURES:
        raise ValueError(f"structure={structure!r} must be one of {list(STRUCTURES)}")
    rng = np.random.default_rng(seed)
    n, d_count, k_count = num_rows, num_domains, num_mechanisms
    cards = [card for _, card in CATEGORICAL]
    if structure == "multiplicative":
        cards = [_MULT_CARDS.get(name, card) for name, card in CATEGORICAL]

    cat = np.stack(
        [draw_category(rng, card, n, zipf=i < 2) for i, card in enumerate(cards)], axis=1
    )
    num = rng.standard_normal((n, len(NUMERIC)))
    weights = rng.permutation(np.linspace(1.0, 2.0, d_count))
    domain = rng.choice(d_count, size=n, p=weights / weights.sum())
    time = _T0 + rng.integers(0, 30 * 86_400, size=n)  # independent of everything else

    if heterogeneity is None:  # [G, K] 0/1 per group, then each domain takes its group's row
        membership = assign_mechanisms(rng, g_count, k_count, mechanisms_per_domain)[group_of]
        scaled = membership / np.sqrt(membership.sum(1, keepdims=True))  # unit-variance sum
    else:
        scaled = dial_weights(g_count, mechanisms_per_domain, heterogeneity)[group_of]  # [D, K]
        membership = (scaled > 0).astype(np.int64)
    mech = np.empty((n, k_count))
    features = []
    for k in range(k_count):
        if structure == "multiplicative":
            mech[:, k] = bilinear(rng, cat[:, 0], cat[:, 1], cards[0], cards[1])
            features.append([CATEGORICAL[0][0], CATEGORICAL[1][0]])
            continue
        cols = np.sort(rng.choice(len(cards), size=2, replace=False))
        nums = np.sort(rng.choice(len(NUMERIC), size=2, replace=False))
        emb = [rng.standard_normal((cards[c], _RANK)) for c in cols]  # 2 x [card, r]
        z = (emb[0][cat[:, cols[0]]] + emb[1][cat[:, cols[1]]]) / np.sqrt(2)  # [N, r]
        proj = rng.standard_normal((2, _RANK))
        w = (num[:, nums, None] * proj).sum(1) / np.sqrt(2)  # [N, r]; no BLAS: faster on [N, 2]
        bias = sum(rng.standard_normal(cards[c])[cat[:, c]] for c in cols) / np.sqrt(2)  # [N]
        f = 1.0 / (1.0 + np.exp(-_GAIN * ((z * w).sum(1) / np.sqrt(_RANK) + bias)))
        mech[:, k] = (f - f.mean()) / (f.std() + 1e-12)
        features.append([CATEGORICAL[c][0] for c in cols] + [NUMERIC[j] for j in nums])

    signal = strength * (mech * scaled[domain]).sum(1)  # [N]
    average = scaled.T @ (weights / weights.sum())  # [K], the domain-weighted mechanism mix
    blind = strength * (mech * average).sum(1)  # the best domain-blind logit (up to sigmoid), [N]
    eps = noise * rng.standard_normal(n)
    intercept = intercept_for(signal + eps, base_rate)
    prob = 1.0 / (1.0 + np.exp(-(intercept + signal + eps)))
    label = (rng.random(n) < prob).astype(np.int64)

    domain_names = [f"domain_{d}" for d in range(d_count)]
    frame = pd.DataFrame({name: cat[:, i] for i, (name, _) in enumerate(CATEGORICAL)})
    for j, name in enumerate(NUMERIC):
        frame[name] = num[:, j].astype(np.float32)
    frame["domain"] = np.asarray(domain_names)[domain]
    frame["label"] = label
    frame["ts"] = time
    schema = TableSchema(
        label="label",
        domain="domain",
        domains=tuple(domain_names),
        categorical=tuple(name for name, _ in CATEGORICAL),
        numeric=NUMERIC,
        user="user_id",
        item="item_id",
        time="ts",
    )
    truth = {
        "domain_mechanism": membership.astype(int).tolist(),
        "shared_mechanism": 0,
        "mechanism_names": ["m0_shared"] + [f"m{k}" for k in range(1, k_count)],
        "mechanism_features": features,
        "domain_names": domain_names,
        "domain_weights": (weights / weights.sum()).round(6).tolist(),
        "positive_rate": float(label.mean()),
        "oracle_auc": auc(label, signal),
        "oracle_auc_domain_blind": auc(label, blind),
    }
    if structure != "additive":
        truth["structure"] = structure
    if groups is not None:
        truth["domain_group"] = group_of.tolist()
    if heterogeneity is not None:
        m = mechanisms_per_domain
        truth["heterogeneity"] = float(heterogeneity)
        truth["mechanism_weights"] = scaled.round(6).tolist()
        truth["mechanism_names"] = [f"m{k}_shared" for k in range(m)] + [
            f"m{k}" for k in range(m, k_count)
        ]
    return PlantedFrame(frame, schema, mech.astype(np.float32), (intercept + signal), truth)


def make_planted(
    num_rows: int = 200_000,
    num_domains: int = 4,
    num_mechanisms: int | None = None,
    mechanisms_per_domain: int = 2,
    seed: int = 0,
    *,
    strength: float = 2.5,
    noise: float = 0.5,
    base_rate: float = 0.4,
    structure: str = "additive",
    heterogeneity: float | None = None,
    groups: int | None = None,
    split: str = "random",
    split_seed: int | None = None,
    encoders: dict | None = None,
) -> MultiDomainData:
    """Planted synthetic data, split (8:1:1 from ``split_seed``, default ``seed``) and encoded."""
    planted = make_planted_frame(
        num_rows,
        num_domains,
        num_mechanisms,
        mechanisms_per_domain,
        seed,
        strength=strength,
        noise=noise,
        base_rate=base_rate,
        structure=structure,
        heterogeneity=heterogeneity,
        groups=groups,
    )
    options = {
        "rows": num_rows,
        "domains": num_domains,
        "mechanisms": len(planted.truth["mechanism_names"]),
        "per_domain": mechanisms_per_domain,
        "seed": seed,
        "strength": strength,
        "noise": noise,
        "base_rate": base_rate,
    }
    if structure != "additive":  # additive options stay as they were (same fingerprints)
        options["structure"] = structure
    if heterogeneity is not None:
        options["heterogeneity"] = heterogeneity
    if groups is not None:
        options["groups"] = groups
    return from_frame(
        planted.frame,
        planted.schema,
        split=split,
        seed=seed if split_seed is None else split_seed,
        encoders=encoders,
        description={"kind": "synthetic", "path": None, "options": options},
        truth=planted.truth,
    )


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks); 0.5 when one class is absent."""
    label = np.asarray(label).astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = pd.Series(np.asarray(score)).rank(method="average").to_numpy()
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _check_args(
    num_rows: int,
    num_domains: int,
    num_mechanisms: int,
    per_domain: int,
    strength: float,
    noise: float,
    base_rate: float,
) -> None:
    if num_rows < 10:
        raise ValueError(f"num_rows={num_rows} must be >= 10")
    if num_domains < 1:
        raise ValueError(f"num_domains={num_domains} must be >= 1")
    if per_domain < 0:
        raise ValueError(f"mechanisms_per_domain={per_domain} must be >= 0")
    if num_mechanisms < 1 + per_domain:
        raise ValueError(
            f"num_mechanisms={num_mechanisms} must be >= 1 + mechanisms_per_domain={per_domain} "
            f"(one shared mechanism plus each domain's own)"
        )
    if strength < 0 or noise < 0:
        raise ValueError(f"strength={strength} and noise={noise} must be >= 0")
    if not 0 < base_rate < 1:
        raise ValueError(f"base_rate={base_rate} must be in (0, 1)")
