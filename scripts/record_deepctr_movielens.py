"""Worked example (docs/record.md): DeepCTR-Torch's MMOE trained by DeepCTR-Torch's own ``fit`` on
MovieLens-100k, recorded through ``record_deepctr``, then analysed without the model.

    python scripts/record_deepctr_movielens.py [ML100K_FOLDER] [OUT_FOLDER]

Domains are the user's age group (<25, 25-34, 35+), also an input feature so the gate can route on
it.  DeepCTR-Torch's MMOE needs two tasks or more: rating > 3 ("like", recorded) and rating > 4
("love").  Rows are split 80/20 by a seeded permutation; the record holds the 20 % held out.
Prints P(e|d), MI, entropy and load of the MMOE's real gate (its softmax over
``gate_dnn_final_layer.0``) and writes the record to OUT_FOLDER (default
runs/deepctr-mmoe-ml100k-record) for `cesaa report` and the dashboard.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.measures import summarize
from analysis.records.deepctr import load_deepctr, record_deepctr

load_deepctr()  # deepctr_torch without its PyPI version check at import
from deepctr_torch.inputs import SparseFeat  # noqa: E402
from deepctr_torch.models.multitask import MMOE  # noqa: E402

ml = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/movielens-100k")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/deepctr-mmoe-ml100k-record")

# 1. the data, in DeepCTR-Torch's format: {feature name: array}
ratings = pd.read_csv(ml / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
users = pd.read_csv(ml / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"])
df = ratings.merge(users, on="user_id")
df["age_group"] = pd.cut(df.age, [0, 24, 34, 200], labels=False)  # 0: <25, 1: 25-34, 2: 35+
cols = ["user_id", "item_id", "gender", "occupation", "age_group"]
for c in cols:
    df[c] = df[c].astype("category").cat.codes.astype("int64")
y = np.stack([df.rating > 3, df.rating > 4], 1).astype("float32")
perm = np.random.default_rng(0).permutation(len(df))
train, test = perm[: int(0.8 * len(df))], perm[int(0.8 * len(df)) :]
x = {c: df[c].to_numpy() for c in cols}
features = [SparseFeat(c, vocabulary_size=int(df[c].max()) + 1, embedding_dim=16) for c in cols]

# 2. DeepCTR-Torch's model and trainer, unchanged
torch.manual_seed(0)
model = MMOE(features, num_experts=4, expert_dnn_hidden_units=(32,), gate_dnn_hidden_units=(16,),
             tower_dnn_hidden_units=(16,), task_types=("binary", "binary"),
             task_names=("like", "love"), seed=0)  # fmt: skip
model.compile("adam", "binary_crossentropy", metrics=["auc"])
model.fit({c: v[train] for c, v in x.items()}, y[train], batch_size=1024, epochs=3, verbose=0)

# 3. the record: the gate of task "like" captured by forward hooks, no change to the model
rec = record_deepctr(
    model, {c: v[test] for c, v in x.items()}, y[test], domain="age_group",
    domains=["age<25", "age25-34", "age35+"], out=out, task=0, keep=["user_id", "item_id"],
    sample_size=2000, overwrite=True, command="python scripts/record_deepctr_movielens.py",
)  # fmt: skip

# 4. the analysis, from the record alone
s = summarize(rec.stats["gate"], list(rec.domains), rec.primary.expert_names)
m = rec.meta.metrics
print(
    f"record: {rec.rows:,} test rows, AUC {m['auc']:.4f}, GAUC {m['gauc']:.4f}, folder {rec.path}"
)
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
