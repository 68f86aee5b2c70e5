"""Worked example (docs/record.md): a torch-rechub MMOE trained by torch-rechub's own trainer and
data loader on MovieLens-100k, recorded, then analysed without the model.

    python scripts/record_rechub_movielens.py [ML100K_FOLDER] [OUT_FOLDER]

Domains are the user's age group (<25, 25-34, 35+), also an input feature so the gate can route on
it; the label is rating > 3.  Prints P(e|d), MI, entropy and load of the MMOE's real gate, and
writes the record to OUT_FOLDER (default runs/rechub-mmoe-ml100k-record) for `cesaa report` and
the dashboard.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_rechub.basic.features import SparseFeature
from torch_rechub.models.multi_task import MMOE
from torch_rechub.trainers import MTLTrainer
from torch_rechub.utils.data import DataGenerator

from analysis.measures import summarize
from analysis.records.rechub import record_rechub

ml = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/movielens-100k")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/rechub-mmoe-ml100k-record")

# 1. the data, in torch-rechub's format (plain pandas)
ratings = pd.read_csv(ml / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
users = pd.read_csv(ml / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"])
df = ratings.merge(users, on="user_id")
df["age_group"] = pd.cut(df.age, [0, 24, 34, 200], labels=False)  # 0: <25, 1: 25-34, 2: 35+
df["label"] = (df.rating > 3).astype("float32")
cols = ["user_id", "item_id", "gender", "occupation", "age_group"]
for c in cols:
    df[c] = df[c].astype("category").cat.codes.astype("int64")
x, y = {c: df[c].to_numpy() for c in cols}, df[["label"]].to_numpy()
features = [SparseFeature(c, vocab_size=int(df[c].max()) + 1, embed_dim=16) for c in cols]

# 2. torch-rechub's model, data loader and trainer, unchanged
torch.manual_seed(0)
model = MMOE(features, ["classification"], n_expert=4, expert_params={"dims": [32]},
             tower_params_list=[{"dims": [16]}])  # fmt: skip
train, val, test = DataGenerator(x, y).generate_dataloader(split_ratio=[0.8, 0.1], batch_size=1024)
with tempfile.TemporaryDirectory() as tmp:
    MTLTrainer(model, ["classification"], n_epoch=3, model_path=tmp).fit(train, val)

# 3. the record: gate outputs captured by forward hooks, no change to the model
rec = record_rechub(
    model, test, domain="age_group", domains=["age<25", "age25-34", "age35+"], out=out,
    keep=["user_id", "item_id"], sample_size=2000, overwrite=True,
    command="python scripts/record_rechub_movielens.py",
)  # fmt: skip

# 4. the analysis, from the record alone
s = summarize(rec.stats["gate"], list(rec.domains), [e.name for e in rec.primary.experts])
print(f"record: {rec.rows:,} test rows, AUC {rec.meta.metrics['auc']:.4f}, folder {rec.path}")
print("P(expert | domain), soft:")
print(
    pd.DataFrame(s["activation_soft"], index=s["domain_names"], columns=s["expert_names"]).round(3)
)
print(f"I(D;E) soft {s['mi_soft']:.4f} nats (normalized {s['mi_soft_normalized']:.3f}), "
      f"hard {s['mi_hard']:.4f} nats")  # fmt: skip
ent = {d: round(v["row_entropy"], 3) for d, v in s["entropy"].items()}
print("mean per-row gate entropy (nats):", ent)
print("expert load, soft (mean gate weight):", np.round(s["load_soft"], 3).tolist())
print("expert load, hard (share of top-1 selections):", np.round(s["load_hard"], 3).tolist())
