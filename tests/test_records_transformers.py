"""transformers MoE language models (tiny, random weights, built from configs: no download) recorded
through ``record_transformers`` and checked against the model's own ``output_router_logits``, the
routers' own selections and expert outputs computed from the stacked expert weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers", reason="pip install 'cesaa[transformers]'")

import transformers  # noqa: E402

from analysis.records.transformers_moe import find_routers, record_transformers  # noqa: E402
from cesaa.routing.stats import RoutingStats  # noqa: E402

SOURCES = ["code", "prose", "numbers"]
TINY = dict(
    vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
)  # fmt: skip


def _mixtral():
    cfg = transformers.MixtralConfig(**TINY, num_local_experts=4, num_experts_per_tok=2)
    return transformers.MixtralForCausalLM(cfg)


def _olmoe():
    cfg = transformers.OlmoeConfig(**TINY, num_experts=6, num_experts_per_tok=3)
    return transformers.OlmoeForCausalLM(cfg)


def _qwen3_moe():
    cfg = transformers.Qwen3MoeConfig(
        **{**TINY, "intermediate_size": 24}, moe_intermediate_size=8, num_experts=5,
        num_experts_per_tok=2, head_dim=8,
    )  # fmt: skip
    return transformers.Qwen3MoeForCausalLM(cfg)


FAMILIES = {"mixtral": (_mixtral, 4, 2), "olmoe": (_olmoe, 6, 3), "qwen3_moe": (_qwen3_moe, 5, 2)}


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(48)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="w0")


def _batches(seed: int = 0):
    """Two batches of 5 sequences of length 9, from three sources, with right padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        ids = torch.randint(1, 48, (5, 9), generator=g)
        lengths = torch.randint(3, 10, (5,), generator=g)
        mask = (torch.arange(9)[None, :] < lengths[:, None]).long()
        src = torch.randint(0, 3, (5,), generator=g)
        out.append({"input_ids": ids * mask, "attention_mask": mask, "source": src})
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_layer_per_token_matches_output_router_logits(family, tmp_path):
    torch.manual_seed(0)
    build, e, k = FAMILIES[family]
    model = build().eval()
    batches = _batches()
    rec = record_transformers(
        model, batches, domain="source", domains=SOURCES, out=tmp_path / "rec",
        tokenizer=_tokenizer(),
    )  # fmt: skip
    assert [g.name for g in rec.meta.gates] == ["layer0", "layer1"]
    assert all(g.top_k == k and g.num_experts == e for g in rec.meta.gates)
    assert all(g.kind == "sparse" and not g.inferred for g in rec.meta.gates)
    assert not rec.meta.labels and rec.meta.metrics == {}

    probs, dom, ids, seq = {0: [], 1: []}, [], [], []
    for i, b in enumerate(batches):
        with torch.no_grad():
            o = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                      output_router_logits=True)  # fmt: skip
        keep = b["attention_mask"].reshape(-1).bool()
        for layer in (0, 1):
            probs[layer].append(o.router_logits[layer].float().softmax(-1)[keep].numpy())
        dom.append(b["source"].repeat_interleave(9)[keep].numpy())
        ids.append(b["input_ids"].reshape(-1)[keep].numpy())
        seq.append((torch.arange(5) + 5 * i).repeat_interleave(9)[keep].numpy())
    dom, ids, seq = np.concatenate(dom), np.concatenate(ids), np.concatenate(seq)
    n = int(sum(b["attention_mask"].sum() for b in batches))
    df = pd.read_parquet(rec.path / "rows.parquet")
    assert len(df) == rec.meta.rows == n  # padding dropped
    np.testing.assert_array_equal(df["domain"], dom)
    np.testing.assert_array_equal(df["keep.token_id"], ids)
    np.testing.assert_array_equal(df["keep.sequence"], seq)
    assert list(df["keep.token"][:3]) == [f"w{i}" for i in ids[:3]]
    assert df["label"].isna().all() and df["prediction"].isna().all()
    for layer in (0, 1):
        p = np.concatenate(probs[layer])
        got = df[[f"p.layer{layer}.{j}" for j in range(e)]].to_numpy()
        np.testing.assert_allclose(got, p, atol=1e-6)
        top = df[[f"top.layer{layer}.{j}" for j in range(k)]].to_numpy()
        np.testing.assert_array_equal(top, np.argsort(-p, axis=1, kind="stable")[:, :k])
        expected = RoutingStats.from_arrays(p, dom, 3, topk_idx=top)
        assert rec.stats[f"layer{layer}"].isclose(expected, rtol=1e-5, atol=1e-5)


def test_routers_found_by_type_in_families_without_the_same_names():
    torch.manual_seed(0)
    for build, _, _ in FAMILIES.values():
        model = build()
        routers = find_routers(model)
        assert list(routers) == ["layer0", "layer1"]
        kinds = {type(model.get_submodule(n)).__name__ for n in routers.values()}
        assert len(kinds) == 1 and next(iter(kinds)).endswith("Router")
    with pytest.raises(ValueError, match="found no router in Linear"):
        find_routers(torch.nn.Linear(2, 2))


def test_deepseek_v3_selection_is_the_routers_own_group_limited_choice(tmp_path):
    """DeepSeek-V3 chooses by sigmoid score + correction bias within the best groups: the record's
    selection is the router's, not the top-k of softmax(logits)."""
    torch.manual_seed(0)
    cfg = transformers.DeepseekV3Config(
        **{**TINY, "num_key_value_heads": 2}, moe_intermediate_size=8, n_routed_experts=8,
        num_experts_per_tok=2, n_group=4, topk_group=2, n_shared_experts=1,
        first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=8, qk_rope_head_dim=4,
        qk_nope_head_dim=4, v_head_dim=8,
    )  # fmt: skip
    model = transformers.DeepseekV3ForCausalLM(cfg).eval()
    router = model.model.layers[1].mlp.gate
    with torch.no_grad():
        router.e_score_correction_bias.copy_(torch.linspace(-1, 1, 8))  # changes the choice
    batches = _batches(seed=1)
    rec = record_transformers(model, batches, domain="source", domains=SOURCES,
                              out=tmp_path / "rec")  # fmt: skip
    assert [g.name for g in rec.meta.gates] == ["layer1"]  # layer 0 is dense
    assert "shared experts" in rec.meta.model_description
    assert [x.kind for x in rec.meta.always_on] == ["shared"]
    # the choice written out: sigmoid scores + bias, best 2 of 4 groups (sum of top-2), top-2
    hidden = []
    h = model.model.layers[1].mlp.register_forward_pre_hook(lambda m, a: hidden.append(a[0]))
    with torch.no_grad():
        for b in batches:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    h.remove()
    chosen = []
    for b, x in zip(batches, hidden, strict=True):
        logits = x.reshape(-1, 16) @ router.weight.T
        s = logits.sigmoid() + router.e_score_correction_bias
        groups = s.view(-1, 4, 2).topk(2, dim=-1).values.sum(-1).topk(2, dim=-1).indices
        allowed = torch.zeros(s.shape[0], 4, dtype=torch.bool).scatter_(1, groups, True)
        s = s.masked_fill(~allowed.repeat_interleave(2, dim=1), float("-inf"))
        chosen.append(s.topk(2, dim=-1).indices[b["attention_mask"].reshape(-1).bool()])
    chosen = torch.cat(chosen).sort(dim=1).values.numpy()
    df = pd.read_parquet(rec.path / "rows.parquet")
    got = np.sort(df[["top.layer1.0", "top.layer1.1"]].to_numpy(), axis=1)
    np.testing.assert_array_equal(got, chosen)


def test_fused_expert_outputs_of_sampled_tokens(tmp_path):
    torch.manual_seed(0)
    model = _mixtral().eval()
    batches = _batches()
    rec = record_transformers(model, batches, domain="source", domains=SOURCES,
                              out=tmp_path / "rec", sample_size=12, sample_layer="layer1")  # fmt: skip
    assert rec.meta.primary.name == "layer1"
    moe = model.model.layers[1].mlp
    hidden = []
    h = moe.register_forward_pre_hook(lambda m, a: hidden.append(a[0].reshape(-1, 16)))
    with torch.no_grad():
        for b in batches:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    h.remove()
    keep = torch.cat([b["attention_mask"].reshape(-1).bool() for b in batches])
    x = torch.cat(hidden)[keep]  # [n, H]: the MoE block's input, token by token
    sample = pd.read_parquet(rec.path / "sample.parquet")
    assert len(sample) == 12
    rows = torch.as_tensor(sample["row"].to_numpy().copy())
    w = moe.experts
    for e in range(4):  # expert e from its stacked weights: down(silu(gate(x)) * up(x))
        gate, up = (x[rows] @ w.gate_up_proj[e].T).chunk(2, dim=-1)
        want = (torch.nn.functional.silu(gate) * up) @ w.down_proj[e].T
        got = np.stack(sample[f"out.{e}"].to_numpy())
        np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-5)


def test_bad_inputs_name_the_problem(tmp_path):
    model = _mixtral()
    b = _batches()[0]
    with pytest.raises(ValueError, match="no column 'src'"):
        record_transformers(model, [b], domain="src", domains=SOURCES, out=tmp_path / "a")
    with pytest.raises(ValueError, match="sample_layer='layer7' is not a router"):
        record_transformers(model, [b], domain="source", domains=SOURCES, out=tmp_path / "b",
                            sample_size=4, sample_layer="layer7")  # fmt: skip
    assert not (tmp_path / "a").exists()
