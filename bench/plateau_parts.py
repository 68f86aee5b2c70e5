"""Which part of the planted product a trained model learned: the shared mechanism or the row's
own domain's, on the plateau benchmark's planted multiplicative data.

On ``synthetic:rows=R,structure=multiplicative,per_domain=1,seed=S`` every domain's logit is
``strength * (f_shared + f_own) / sqrt(2)``: the shared user x item product plus one product of
the domain's own (``cesaa.data.synthetic``).  Per model (default protocol, model seed S, as
``bench.plateau``), the test logit, centred within each domain, is regressed on the two
mechanisms' values (:func:`mechanism_weights`): a model that learned both has weights of about
equal size (own / shared near 1); a weight near 0 is a part it did not learn.  The *shared-only ceiling* is the test
AUC of ``f_shared`` alone: what a model that learns the shared product exactly and nothing of
the domains' own reaches.

    python -m bench.plateau_parts --seeds 0,1 --models star,pepnet,mlp,cesaa
"""

from __future__ import annotations

import argparse

import numpy as np


def mechanism_weights(
    logit: np.ndarray, shared: np.ndarray, own: np.ndarray, domain: np.ndarray
) -> tuple[float, float]:
    """Least-squares weights (b_shared, b_own) of ``logit`` ~ b_shared * shared + b_own * own +
    one intercept per domain; all arrays [N]."""
    y = np.asarray(logit, dtype=np.float64)
    x = np.stack([shared, own], 1).astype(np.float64)  # [N, 2]
    for d in np.unique(domain):  # per-domain intercepts: centre every column within the domain
        m = domain == d
        y[m] = y[m] - y[m].mean()
        x[m] = x[m] - x[m].mean(0)
    b, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(b[0]), float(b[1])


def planted_parts(rows: int, seed: int, data) -> tuple[np.ndarray, np.ndarray]:
    """The shared and the row's own-domain mechanism [N_test] each, for ``data`` =
    ``load_source`` of the planted multiplicative source (random split, split seed 0)."""
    from cesaa.data.splits import make_split
    from cesaa.data.synthetic import make_planted_frame

    planted = make_planted_frame(
        rows, mechanisms_per_domain=1, seed=seed, structure="multiplicative"
    )
    test = make_split("random", rows, seed=0)[2].numpy()
    names = list(planted.schema.domains)
    domain = np.array([names.index(d) for d in planted.frame["domain"].to_numpy()[test]])
    if not (
        np.array_equal(domain, data.test.domain.numpy())
        and np.array_equal(planted.frame["label"].to_numpy()[test], data.test.label.numpy())
    ):
        raise RuntimeError("the regenerated planted table does not match the loaded test split")
    member = np.asarray(planted.truth["domain_mechanism"])  # [D, K]; column 0 is the shared one
    own = np.array([np.flatnonzero(member[d, 1:])[0] + 1 for d in range(len(member))])
    return planted.mechanisms[test, 0], planted.mechanisms[test, own[domain]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1", help="generator (and model) seeds, comma-separated")
    p.add_argument("--rows", type=int, default=40_000)
    p.add_argument(
        "--models",
        default="star,pepnet,mlp,cesaa",
        help="registry names, each optionally with :key=value;... ModelConfig overrides",
    )
    args = p.parse_args(argv)
    import torch

    from bench.plateau import planted_source, variant_configs
    from cesaa.benchmark.protocol import load_source
    from cesaa.config import TrainConfig
    from cesaa.data.synthetic import auc
    from cesaa.train import train

    torch.set_num_threads(1)
    print(
        "| model | seed | test AUC | weight of the shared product | weight of the domain's own "
        "| own / shared |"
    )
    print("|:---|---:|---:|---:|---:|---:|")
    for seed in (int(s) for s in args.seeds.split(",")):
        data = load_source(planted_source(args.rows, seed))
        shared, own = planted_parts(args.rows, seed, data)
        ceiling = auc(data.test.label.numpy(), shared)
        print(f"| shared-only ceiling | {seed} | {ceiling:.4f} | 1 | 0 | 0 |")
        for variant in args.models.split(","):
            mcfg, tcfg = variant_configs(variant, TrainConfig(seed=seed, device="cpu"))
            res = train(mcfg, tcfg, data)
            t = data.test
            with torch.no_grad():
                logit = res.model.eval()(t.cat, t.num, t.domain).logit.numpy()
            b_shared, b_own = mechanism_weights(logit, shared, own, t.domain.numpy())
            test_auc = float(res.test_metrics["auc"])
            ratio = b_own / b_shared
            print(
                f"| {variant} | {seed} | {test_auc:.4f} | {b_shared:.3f} | {b_own:.3f} | {ratio:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
