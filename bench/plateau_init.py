"""What a model can learn of a user x item product at initialization: the input scale and the
interaction of the untrained logit, on the plateau benchmark's planted multiplicative data.

On that data the label is a user x item product (``docs/training.md``); a model leaves the
plateau once its logit grows a user x item interaction, and that growth starts from the
interaction it has at init.  Per model (and per generator seed, model seed = generator seed):

- *user+item share*: the share of the input's variance (``FeatureEmbedding`` output, after the
  input norm if any) in the user and item embedding columns, the only columns that carry signal;
- *interaction*: :func:`interaction_rms` of the untrained model.

No training: seconds per model.

    python -m bench.plateau_init --seeds 0,1,2 --models mlp,shared_bottom,mmoe,mmoe:input_norm=batch
"""

from __future__ import annotations

import argparse

import torch


def interaction_rms(
    model: torch.nn.Module, part, names: list[str], n: int = 30, ctx: int = 8
) -> float:
    """The user x item interaction of ``model``'s logit: the n most frequent users and items of
    ``part`` (a split with ``cat``, ``num``, ``domain``, ``label``), every pair scored in ``ctx``
    contexts (the other columns and the domain of fixed random rows) and averaged over them; the
    rms of the double-centred [n, n] matrix (the part no user term plus item term expresses).
    The model runs in training mode, so an input BatchNorm reads this batch's moments."""
    ui, ii = names.index("user_id"), names.index("item_id")
    users = torch.bincount(part.cat[:, ui]).argsort(descending=True)[:n]
    items = torch.bincount(part.cat[:, ii]).argsort(descending=True)[:n]
    rows = torch.randint(0, len(part.label), (ctx,), generator=torch.Generator().manual_seed(0))
    cat = part.cat[rows].repeat(n * n, 1)  # [n*n*ctx, C]: pair-major, context-minor
    cat[:, ui] = users.repeat_interleave(n * ctx)
    cat[:, ii] = items.repeat_interleave(ctx).repeat(n)
    num, domain = part.num[rows].repeat(n * n, 1), part.domain[rows].repeat(n * n)
    with torch.no_grad():
        f = model.train()(cat, num, domain).logit.reshape(n, n, ctx).mean(-1)  # [users, items]
    dc = f - f.mean(0, keepdim=True) - f.mean(1, keepdim=True) + f.mean()
    return float(dc.pow(2).mean().sqrt())


def signal_share(model: torch.nn.Module, part, names: list[str], rows: int = 8192) -> float:
    """Share of the input's variance (the model's ``FeatureEmbedding`` output, training mode) in
    the user_id and item_id embedding columns."""
    emb = model.embedding if hasattr(model, "embedding") else model.features
    with torch.no_grad():
        x = emb.train()(part.cat[:rows], part.num[:rows])  # [rows, C*De + M]
    var, de = x.var(0), emb.weight.shape[1]
    cols = [c * de + j for c in (names.index("user_id"), names.index("item_id")) for j in range(de)]
    return float(var[cols].sum() / var.sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="generator (and model) seeds, comma-separated")
    p.add_argument("--rows", type=int, default=40_000)
    p.add_argument(
        "--models",
        default="mlp,shared_bottom,mmoe,mmoe:input_norm=batch",
        help="registry names, each optionally with :key=value;... ModelConfig overrides",
    )
    args = p.parse_args(argv)
    from bench.plateau import planted_source, variant_configs
    from cesaa.data import load_data
    from cesaa.models import build_model

    print("| model | seed | user+item share of the input variance | interaction at init |")
    print("|:---|---:|---:|---:|")
    for seed in (int(s) for s in args.seeds.split(",")):
        data = load_data(planted_source(args.rows, seed))
        names = list(data.spec.cat_names)
        for variant in args.models.split(","):
            cfg, _ = variant_configs(variant)
            torch.manual_seed(seed)
            model = build_model(cfg, data.spec)
            share = signal_share(model, data.train, names)
            inter = interaction_rms(model, data.train, names)
            print(f"| {variant} | {seed} | {share:.3f} | {inter:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
