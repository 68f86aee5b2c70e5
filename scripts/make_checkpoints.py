"""Regenerate the shipped checkpoints in ``checkpoints/`` (the dashboard's data on a fresh clone).

    .venv/bin/python scripts/make_checkpoints.py            # all of them, ~5-15 min on 2 cores
    .venv/bin/python scripts/make_checkpoints.py --only cesaa mmoe --no-umap

Every checkpoint is trained on the same built-in synthetic data (``DATA``; ``DATA_FOR`` names the
exceptions) with the same small architecture (``SMALL``) and training settings (``TRAIN``, seed 0,
one CPU thread), so the grid is deterministic: rerunning the command reproduces the weights.  Only what the dashboard reads is kept
(``meta.json``, ``model.safetensors``, ``metrics.jsonl`` without wall-clock times, the routing
snapshots with the row-level ones thinned to ``ROW_SNAPSHOTS`` epochs); the resume files
(optimizer state, last weights) are dropped to keep the folder small.  Each checkpoint also gets
precomputed 2-D projections of its expert outputs (PCA and UMAP, ``SAMPLE_SIZES`` rows of the test
split) in ``<checkpoint>/embeddings/``, so the Embeddings page is instant for it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from analysis import embeddings as emb
from analysis.collect import collect
from analysis.domain_groups import group_recovery
from analysis.measures import mutual_information
from analysis.opened import open_path
from analysis.records.collection import head_sample
from analysis.report_build import record_projection_key
from cesaa.checkpoint import load_checkpoint
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models import default_config
from cesaa.routing_rows import ROUTING_DIR
from cesaa.train import METRICS, train

REPO = Path(__file__).resolve().parents[1]
# heterogeneity 1: each domain's signal is its own mechanisms (cesaa.data.synthetic), data where
# domain-conditioned routing has something to learn
DATA = "synthetic:rows=60000,domains=4,heterogeneity=1,seed=0"
# small on purpose: a few hundred kB per checkpoint, seconds per epoch on one core
SMALL = {"embed_dim": 8, "expert_hidden": (32,), "expert_dim": 16, "tower_hidden": (16,)}
# one schedule for every model, trained to convergence: early stopping never before min_steps steps
# nor while the routing is still forming (TrainConfig defaults, cesaa/stopping.py).  Routing
# snapshots on: the "Routing over training" page reads them (aggregate + row-level)
TRAIN = TrainConfig(
    epochs=30,
    batch_size=512,
    lr=3e-3,
    weight_decay=0.0,
    patience=3,
    seed=0,
    device="cpu",
    routing_snapshots=True,
)
# checkpoints on other data than DATA: name -> data source (many domains for the D = 40 views)
# (cesaa-d40: 40 domains in 8 planted groups sharing their mechanisms, 15,000 rows per group)
DATA_FOR = {"cesaa-d40": "synthetic:rows=120000,domains=40,groups=8,heterogeneity=1,seed=0"}
ROW_SNAPSHOTS = 8  # row-level routing snapshots shipped per checkpoint (size), evenly spaced
SAMPLE_SIZES = (500, 1000, 2000)  # the Embeddings page's sample-size choices that are precomputed
SPLIT = "test"
DEFAULT = "cesaa"
# name -> (registry model, config overrides, what it shows)
GRID: dict[str, tuple[str, dict, str]] = {
    "cesaa": ("cesaa", {}, "CESAA at the default settings: k=2 of 8 experts, 1 shared, alpha=0.01"),
    "cesaa-alpha0": ("cesaa", {"alpha": 0.0}, "alpha grid: no mutual-information loss"),
    "cesaa-alpha0.1": ("cesaa", {"alpha": 0.1}, "alpha grid: 10x the default MI weight"),
    "cesaa-alpha1": ("cesaa", {"alpha": 1.0}, "alpha grid: 100x the default MI weight"),
    "cesaa-k1": ("cesaa", {"top_k": 1}, "k variant: one domain expert per row"),
    "cesaa-k4": ("cesaa", {"top_k": 4}, "k variant: four domain experts per row"),
    "cesaa-noshared": ("cesaa", {"num_shared": 0}, "without the always-on shared expert"),
    "mmoe": (
        "mmoe",
        {"mmoe_experts": 8},
        "MMoE baseline: 8 experts, dense softmax gate per domain",
    ),
    "sparse_moe": ("sparse_moe", {}, "plain sparse MoE: top-2 of 8, no shared expert, no MI loss"),
    "cesaa-d40": (
        "cesaa",
        {"num_experts": 32},
        "many domains: CESAA with 32 experts (k=2) on 40 domains in 8 planted groups",
    ),
}
RESUME_FILES = ("last.safetensors", "optimizer.safetensors", "train_state.json")


def train_one(name: str, data, out: Path) -> Path:
    """Train checkpoint ``name`` of ``GRID`` into ``out/name`` and strip it to what is shipped."""
    model, overrides, _ = GRID[name]
    run = out / name
    if run.exists():
        shutil.rmtree(run)
    train(default_config(model, **SMALL, **overrides), TRAIN, data, run)
    for f in RESUME_FILES:
        (run / f).unlink(missing_ok=True)
    thin_row_snapshots(run)
    history = [json.loads(line) for line in (run / METRICS).read_text().splitlines() if line]
    lines = [json.dumps({k: v for k, v in r.items() if k != "time_s"}) for r in history]
    (run / METRICS).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    for f in run.rglob("*"):
        if f.is_file():
            f.chmod(0o644)
    return run


def thin_row_snapshots(run: Path) -> None:
    """Keep ``ROW_SNAPSHOTS`` row-level routing snapshots, evenly spaced from the first epoch to
    the last, plus the best epoch's (the aggregate ones stay for every epoch).  Router saturation
    (``analysis.saturation``) reads whichever epochs there are; the rows cost 2,000 x E floats each,
    so the 40-domain checkpoint's 32 experts would otherwise dominate the folder's size."""
    files = sorted((run / ROUTING_DIR).glob("rows_epoch_*.npz"))
    if len(files) <= ROW_SNAPSHOTS:
        return
    best = json.loads((run / "meta.json").read_text())["metrics"]["best_epoch"]
    epochs = [int(f.stem.rsplit("_", 1)[1]) for f in files]
    keep = {epochs[round(i)] for i in np.linspace(0, len(epochs) - 1, ROW_SNAPSHOTS)} | {best}
    for f, epoch in zip(files, epochs, strict=True):
        if epoch not in keep:
            f.unlink()


def _projector(points, method: str, params: dict):
    return lambda: emb.project(points, method, seed=0, **params)


def precompute_projections(run: Path, methods: tuple[str, ...]) -> None:
    """PCA/UMAP of ``SAMPLE_SIZES`` rows of the expert-output sample of the checkpoint's record
    (the one the dashboard and the report read) into ``run/embeddings/``, keyed as they look it up
    (``analysis.report_build.record_projection_key``); earlier projections are removed."""
    cache = emb.embedding_cache_path(run)
    shutil.rmtree(cache, ignore_errors=True)
    opened = open_path(run, split=SPLIT)
    rec = opened.record
    for size in SAMPLE_SIZES:
        seed = int(rec.meta.sample.get("seed", 0))
        sample = head_sample(opened.collection().sample, size, seed)
        if sample is None or sample.expert_outputs is None:
            return
        points, _ = emb.expert_output_points(sample, "routed")
        for method in methods:
            params = dict(emb.UMAP_DEFAULTS) if method == "umap" else {}
            key = record_projection_key(rec, method, len(points), 0, params)
            emb.cached_projection(cache, key, _projector(points, method, key["params"]))
    for f in cache.glob("*.npz"):
        f.chmod(0o644)


def measure(out: Path, datasets: dict) -> dict[str, dict]:
    """Per shipped checkpoint: test AUC, normalized soft I(D;E) of its test routing, size, and for
    data with planted groups of domains their recovery (``analysis.domain_groups``, soft and hard)."""
    found = {}
    for name, (model, _, what) in GRID.items():
        run = out / name
        if not (run / "meta.json").is_file():
            continue
        ckpt = load_checkpoint(run)
        source = DATA_FOR.get(name, DATA)
        data = datasets.get(source) or load_data(source, encoders=ckpt.encoders)
        col = collect(ckpt.model, data.test, num_domains=ckpt.spec.num_domains)
        row = {
            "model": model,
            "what": what,
            "auc": ckpt.meta["metrics"]["test"]["auc"],
            "best_epoch": ckpt.meta["metrics"]["best_epoch"],
            "epochs": ckpt.meta["epochs_completed"],
            "mi": mutual_information(col.stats, "soft", normalized=True) if col.stats else None,
            "kb": sum(f.stat().st_size for f in run.rglob("*") if f.is_file()) / 1024,
        }
        planted = (data.truth or {}).get("domain_group")
        if planted is not None and col.stats is not None:
            row["groups"] = {k: group_recovery(col.stats, planted, k) for k in ("soft", "hard")}
        found[name] = row
    return found


def readme(out: Path, found: dict[str, dict], seconds: float) -> str:
    rows = [
        f"| `{name}` | {r['model']} | {r['what']} | {r['auc']:.4f} | "
        f"{'n/a' if r['mi'] is None else format(r['mi'], '.3f')} | {r['best_epoch']} of "
        f"{r['epochs']} | {r['kb']:.0f} kB |"
        for name, r in found.items()
    ]
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1024**2
    return "\n".join(
        [
            "# Shipped checkpoints",
            "",
            "Small models trained on the built-in synthetic data so the dashboard "
            "(`streamlit run app/main.py`) is useful on a fresh clone with no download.",
            "",
            f"- data: `{DATA}` (planted domain -> mechanism truth, see `cesaa.data.synthetic`; "
            "test split = 10%); " + ", ".join(f"`{n}` on `{src}`" for n, src in DATA_FOR.items()),
            f"- architecture: {SMALL}, 8 selectable experts unless noted",
            f"- training, one schedule for every model: at most {TRAIN.epochs} epochs, batch "
            f"{TRAIN.batch_size}, lr {TRAIN.lr}, patience {TRAIN.patience}, never before "
            f"{TRAIN.min_steps} steps nor while the routing is still forming (routing_rise "
            f"{TRAIN.routing_rise}, `docs/training.md`), best epoch by validation "
            f"{TRAIN.monitor}, seed {TRAIN.seed}, CPU, one thread",
            f"- the dashboard opens `{DEFAULT}` first",
            "",
            *summary(found),
            "| checkpoint | model | what it shows | test AUC | normalized soft I(D;E) "
            "| best epoch | size |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Total: {total:.1f} MB.  Each folder holds `meta.json`, `model.safetensors`, "
            "`metrics.jsonl` (per-epoch losses and validation metrics, wall-clock times removed), "
            "`routing/` (routing snapshots of the validation split for the Routing over "
            "training page: the statistics of every epoch, and the gate of a fixed 2,000-row "
            f"sample at {ROW_SNAPSHOTS} evenly spaced epochs and the best one) "
            f"and `embeddings/` (PCA and UMAP of {', '.join(map(str, SAMPLE_SIZES))} sampled "
            "test rows' expert outputs, the Embeddings page's cache).  Resume files are not "
            "shipped.",
            "",
            "## Regenerate",
            "",
            "```bash",
            ".venv/bin/python scripts/make_checkpoints.py",
            "```",
            "",
            f"Deterministic (seed 0, one CPU thread).  The last full run took {seconds:.0f} s on 2 "
            "shared CPU cores (including about a minute of UMAP compilation on its first fit in a "
            "process).  `--only NAME ...` regenerates some, `--no-umap` skips UMAP (the dashboard "
            "then shows PCA and offers to compute UMAP).",
            "",
        ]
    )


def summary(found: dict[str, dict]) -> list[str]:
    """What the grid shows, in sentences: the default against MMoE, the planted groups recovered."""
    lines = []
    c, m = found.get(DEFAULT), found.get("mmoe")
    if c is not None and m is not None:
        lines.append(
            f"**The default** `{DEFAULT}`: test AUC {c['auc']:.4f} against MMoE's {m['auc']:.4f} "
            f"on the same data and schedule ({c['auc'] - m['auc']:+.4f}); its routing is "
            f"domain-specific, normalized soft I(D;E) {c['mi']:.3f} (MMoE's dense gates: "
            f"{m['mi']:.3f}).  One seed: differences below about 0.01 AUC are within seed noise "
            "(`docs/benchmarks.md`, the noise floor)."
        )
    for name, r in found.items():
        if "groups" in r:
            soft, hard = r["groups"]["soft"], r["groups"]["hard"]
            lines.append(
                f"**Planted groups** `{name}`: {len(soft.groups)} domains in "
                f"{soft.num_groups} planted groups sharing their mechanisms; clustering the "
                "domains by their test routing P(e|d) into as many clusters "
                f"(`analysis.domain_groups`) recovers them with adjusted Rand index "
                f"{soft.ari:.3f} (NMI {soft.nmi:.3f}) from the gate probabilities and "
                f"{hard.ari:.3f} (NMI {hard.nmi:.3f}) from the experts selected "
                "(1 = the planted partition, about 0 = chance)."
            )
    return [x for line in lines for x in (line, "")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "checkpoints"), help="folder (default checkpoints/)")
    p.add_argument("--only", nargs="+", choices=list(GRID), help="train only these")
    p.add_argument("--no-umap", action="store_true", help="precompute PCA only")
    p.add_argument(
        "--projections-only",
        action="store_true",
        help="keep the trained checkpoints, recompute their projections only",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = ("pca",) if args.no_umap else ("pca", "umap")
    t0 = time.perf_counter()
    datasets = {DATA: load_data(DATA)}
    for name in args.only or list(GRID):
        t = time.perf_counter()
        source = DATA_FOR.get(name, DATA)
        if source not in datasets:
            datasets[source] = load_data(source)
        data = datasets[source]
        run = out / name if args.projections_only else train_one(name, data, out)
        precompute_projections(run, methods)
        print(f"{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    seconds = time.perf_counter() - t0
    (out / "README.md").write_text(readme(out, measure(out, datasets), seconds), encoding="utf-8")
    print(f"done in {seconds:.0f} s -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
