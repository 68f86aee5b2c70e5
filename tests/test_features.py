"""The fused categorical embedding: same function and init as per-column tables, old weights load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from cesaa.checkpoint import WEIGHTS, load_checkpoint, read_tensors, sha256_file, write_tensors
from cesaa.features import FeatureEmbedding, FeatureSpec, embedding_rows

SPEC = FeatureSpec(("user", "item", "ctx"), (10, 12, 8), ("n0", "n1"), ("d0", "d1"))
DE, B = 4, 64
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (B,), generator=g) for c in SPEC.cat_cardinalities], 1)
    return cat, torch.randn(B, SPEC.num_numeric, generator=g)


def test_fused_lookup_equals_one_table_per_column() -> None:
    torch.manual_seed(0)
    fe = FeatureEmbedding(SPEC, DE)
    cat, num = _batch()
    tables = [nn.Embedding.from_pretrained(fe.column_weight(c)) for c in range(3)]
    expected = torch.cat([t(cat[:, c]) for c, t in enumerate(tables)] + [num], dim=1)
    assert fe.out_dim == 3 * DE + 2
    assert torch.equal(fe(cat, num), expected)


def test_init_draws_the_same_numbers_as_per_column_embeddings() -> None:
    torch.manual_seed(3)
    old = [nn.Embedding(c, DE) for c in SPEC.cat_cardinalities]  # the layout before the fusion
    for emb in old:
        nn.init.normal_(emb.weight, std=0.05)
    after_old = torch.rand(3)
    torch.manual_seed(3)
    fe = FeatureEmbedding(SPEC, DE)
    assert torch.equal(fe.weight, torch.cat([e.weight for e in old]))
    assert torch.equal(torch.rand(3), after_old)  # the random stream continues identically


def test_per_column_state_dict_loads_into_the_fused_table() -> None:
    torch.manual_seed(0)
    fe = FeatureEmbedding(SPEC, DE)
    old = {f"embeddings.{c}.weight": fe.column_weight(c).detach().clone() for c in range(3)}
    torch.manual_seed(1)
    fresh = FeatureEmbedding(SPEC, DE)
    fresh.load_state_dict(old)
    cat, num = _batch()
    assert torch.equal(fresh(cat, num), fe(cat, num))


def test_index_outside_a_columns_vocabulary_names_the_column() -> None:
    fe = FeatureEmbedding(SPEC, DE)
    cat, num = _batch()
    cat[5, 1] = 12  # item has cardinality 12: would read ctx's first row if not refused
    with pytest.raises(IndexError, match=r"'item' has index 12 at row 5, outside \[0, 12\)"):
        fe(cat, num)


def test_a_checkpoint_in_the_per_column_layout_loads_with_identical_predictions(tmp_path) -> None:
    src = SHIPPED / "cesaa"
    ckpt = load_checkpoint(src)
    run = tmp_path / "old-layout"
    shutil.copytree(src, run)
    state = read_tensors(run / WEIGHTS)
    if "features.weight" in state:  # shipped in the fused layout: split it back
        fused = state.pop("features.weight")
        for c, block in enumerate(fused.split(list(ckpt.spec.cat_cardinalities))):
            state[f"features.embeddings.{c}.weight"] = block.clone()
    assert "features.weight" not in state and "features.embeddings.0.weight" in state
    write_tensors(run / WEIGHTS, state, metadata={"format": "pt"})
    meta = json.loads((run / "meta.json").read_text())
    meta["weights_sha256"] = sha256_file(run / WEIGHTS)
    (run / "meta.json").write_text(json.dumps(meta))
    old = load_checkpoint(run)
    g = torch.Generator().manual_seed(0)
    spec = ckpt.spec
    cat = torch.stack([torch.randint(0, c, (B,), generator=g) for c in spec.cat_cardinalities], 1)
    num = torch.rand(B, spec.num_numeric, generator=g)
    domain = torch.randint(0, spec.num_domains, (B,), generator=g)
    with torch.no_grad():
        assert torch.equal(old.model(cat, num, domain).logit, ckpt.model(cat, num, domain).logit)


def test_input_norm_batch_puts_every_column_at_unit_scale_in_training() -> None:
    """norm="batch": in training mode each output column is standardized over the batch (biased
    variance, as BatchNorm normalizes), where the raw embeddings sit at std 0.05; eval reads the
    running moments."""
    torch.manual_seed(0)
    fe = FeatureEmbedding(SPEC, DE, "batch").train()
    cat, num = _batch()
    raw = torch.cat([fe.weight[cat + fe.offsets].reshape(B, -1), num], dim=1)  # [B, 3*De + 2]
    expected = (raw - raw.mean(0)) / torch.sqrt(raw.var(0, unbiased=False) + fe.norm.eps)
    out = fe(cat, num)
    assert torch.allclose(out, expected, atol=1e-5)
    assert raw[:, : 3 * DE].std() < 0.1  # without it the embeddings are far below unit scale
    fe.eval()
    n = fe.norm
    frozen = (raw - n.running_mean) / torch.sqrt(n.running_var + n.eps)
    assert torch.allclose(fe(cat, num), frozen, atol=1e-5)


def test_input_norm_draws_no_random_numbers_and_takes_one_row() -> None:
    torch.manual_seed(5)
    plain = FeatureEmbedding(SPEC, DE)
    after_plain = torch.rand(3)
    torch.manual_seed(5)
    normed = FeatureEmbedding(SPEC, DE, "batch")
    assert torch.equal(normed.weight, plain.weight)
    assert torch.equal(torch.rand(3), after_plain)
    cat, num = _batch()
    one = normed.train()(cat[:1], num[:1])  # one row: no batch variance, the running moments
    assert torch.isfinite(one).all() and one.shape == (1, normed.out_dim)


def test_input_norm_rejects_an_unknown_value() -> None:
    with pytest.raises(ValueError, match=r"input norm 'layer' must be one of \['none', 'batch'\]"):
        FeatureEmbedding(SPEC, DE, "layer")


def test_embedding_rows_are_the_tables_rows_and_their_gradient_sums_per_index() -> None:

    torch.manual_seed(0)
    table = torch.nn.Embedding(3, 4)
    index = torch.tensor([[2, 0], [2, 1], [0, 2]])
    rows = embedding_rows(table, index)
    assert rows.shape == (3, 2, 4)
    torch.testing.assert_close(rows, table.weight.detach()[index], rtol=0, atol=0)
    c = torch.arange(24, dtype=torch.float32).view(3, 2, 4)
    (rows * c).sum().backward()
    # row d of the table receives the sum of c over the positions that read it
    want = torch.stack([c[index == d].sum(0) for d in range(3)])
    torch.testing.assert_close(table.weight.grad, want)


def test_embed_init_std_sets_the_draws_scale_from_the_same_random_numbers() -> None:
    torch.manual_seed(7)
    small = FeatureEmbedding(SPEC, DE)
    torch.manual_seed(7)
    large = FeatureEmbedding(SPEC, DE, init_std=0.2)
    assert torch.allclose(large.weight, small.weight * 4, atol=1e-6)  # 0.2 / 0.05
