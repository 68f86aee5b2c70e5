"""Worked example (docs/record.md): a tiny Mixtral (random weights, built from a config: no
download) recorded token by token on three synthetic sources, then analysed without the model.

    python scripts/record_mixtral_sources.py [OUT_FOLDER]

Sources: "code", "prose" and "numbers" draw 70 % of their tokens from a vocabulary of their own
(64 words each) and 30 % from 64 words they share; sequences of 16 to 64 tokens, right-padded in
batches of 16.  Every MoE layer's router is recorded (2 layers, 8 experts, top-2); prints per layer
the hard P(expert | source) and I(source; expert).  Random weights route by token identity, so
what differs between sources here is their vocabulary: the numbers show how the record reads
routing, not what a trained model learns.  The record goes to OUT_FOLDER (default
runs/mixtral-sources-record); open it in the dashboard (Tokens page) or with `cesaa report`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from analysis.measures import summarize
from analysis.records.transformers_moe import record_transformers

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/mixtral-sources-record")
SOURCES = ["code", "prose", "numbers"]

# 1. a word-level tokenizer over 4 x 64 words: <pad>, then each source's words, then shared ones
words = ["<pad>"] + [f"{s}{i}" for s in ("c", "p", "n", "w") for i in range(64)]
tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")

# 2. the model: Mixtral's architecture at toy size
torch.manual_seed(0)
cfg = transformers.MixtralConfig(
    vocab_size=len(words), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
    max_position_embeddings=128,
)  # fmt: skip
model = transformers.MixtralForCausalLM(cfg).eval()


# 3. the texts: 600 sequences, 200 per source
def text(source: int, rng: np.random.Generator) -> str:
    n = int(rng.integers(16, 65))
    own = rng.random(n) < 0.7
    ids = np.where(own, 1 + 64 * source + rng.integers(0, 64, n), 193 + rng.integers(0, 64, n))
    return " ".join(words[i] for i in ids)


rng = np.random.default_rng(0)
src = np.arange(600) % 3
texts = [text(int(s), rng) for s in src]
batches = []
for lo in range(0, 600, 16):
    enc = tokenizer(texts[lo : lo + 16], padding=True, return_tensors="pt")
    batches.append({**enc, "source": torch.as_tensor(src[lo : lo + 16])})

# 4. the record: every router, one row per real token
rec = record_transformers(
    model, batches, domain="source", domains=SOURCES, out=out, tokenizer=tokenizer,
    sample_size=2000, overwrite=True, command="python scripts/record_mixtral_sources.py",
)  # fmt: skip

# 5. the analysis, from the record alone
print(
    f"record: {rec.rows:,} tokens of {len(texts)} sequences, gates {[g.name for g in rec.meta.gates]}"
)
for g in rec.meta.gates:
    s = summarize(rec.stats[g.name], SOURCES, g.expert_names)
    print(f"{g.name}: hard P(expert | source), share of top-{g.top_k} selections")
    hard = pd.DataFrame(s["activation_hard"], index=SOURCES, columns=range(g.num_experts))
    print(hard.round(3).to_string())
    print(f"  I(source; expert) hard {s['mi_hard']:.4f} nats "
          f"({s['mi_hard_normalized']:.1%} of its ceiling), soft {s['mi_soft']:.4f} nats")  # fmt: skip
