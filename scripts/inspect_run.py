"""Print what the Experts, Rows and Routing-over-training pages show for one run, as Markdown.

    .venv/bin/python scripts/inspect_run.py --train movielens-100k:PATH --out runs/ml100k-inspect
    .venv/bin/python scripts/inspect_run.py --checkpoint checkpoints/cesaa

``--train SOURCE`` first trains CESAA (default config, routing snapshots on, seed 0, one CPU
thread, ``--epochs``) into ``--out``; ``--checkpoint`` reads an existing run.  Every number comes
from ``analysis.report_inspection.inspection_section`` on the test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from analysis.report_inspection import inspection_section
from cesaa.checkpoint import load_checkpoint
from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models import default_config
from cesaa.train import train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--train", help="data source to train CESAA on")
    g.add_argument("--checkpoint", help="an existing run folder")
    p.add_argument("--out", default="runs/inspect", help="run folder for --train")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rows", type=int, default=20_000, help="test rows read (seeded sample)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.train:
        tcfg = TrainConfig(epochs=args.epochs, seed=0, device="cpu", routing_snapshots=True)
        train(default_config("cesaa"), tcfg, load_data(args.train), args.out)
    run = Path(args.checkpoint or args.out)
    ckpt = load_checkpoint(run)
    desc = ckpt.meta["data"]["description"]
    data = load_data(desc["source"], split=desc["split"], seed=desc["seed"], encoders=ckpt.encoders)
    names = list(ckpt.domain_names)
    sec = inspection_section(
        ckpt.model, data.test, ckpt.encoders, names, run, max_rows=args.rows, top_n=3
    )
    print(f"# {run}: test AUC {ckpt.meta['metrics']['test']['auc']:.4f}, {sec['rows']} rows\n")
    print("| expert | rows | share | domains | mean pred | label rate | AUC |")
    print("|---|---|---|---|---|---|---|")

    def f(x: float | None) -> str:  # NaN is stored as None (JSON)
        return "n/a" if x is None else f"{x:.3f}"

    for e in sec.get("experts", []):
        print(
            f"| {e['expert']} | {e['rows']} | {f(e['share'])} | {e['domains']} | "
            f"{f(e['mean_prediction'])} | {f(e['label_rate'])} | {f(e['auc'])} |"
        )
    print("\nTop significant values (log-odds [95% CI], routed / other rows with it):\n")
    for t in sec.get("top_values", []):
        print(
            f"- expert {t['expert']}: {t['feature']} = {t['value']}: {t['log_odds']:+.2f} "
            f"[{t['ci_low']:+.2f}, {t['ci_high']:+.2f}], {t['routed_with']} / {t['other_with']}"
        )
    if sec.get("domain_only_experts"):
        print(
            f"\nExperts {sec['domain_only_experts']} receive every row of their domains or none: "
            "the domain alone picks them, so no value can be over-represented within a domain."
        )
    m = np.asarray(sec["swap"]["mean_abs_dlogit"])
    tv = np.asarray(sec["swap"]["mean_tv"])
    print(f"\nDomain swap ({sec['swap_rows']} rows): mean |dlogit| (row = own, column = as if)\n")
    print("| domain | " + " | ".join(names) + " | TV to others |")
    print("|---" * (len(names) + 2) + "|")
    for i, n in enumerate(names):
        off = np.delete(tv[i], i)
        print(f"| {n} | " + " | ".join(f(v) for v in m[i]) + f" | {f(off.mean())} |")
    if "settled" in sec:
        print(f"\n{sec['settled']}")
        for r in sec["evolution"]:
            print(f"- epoch {r['epoch']}: saturation {f(r['saturation'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
