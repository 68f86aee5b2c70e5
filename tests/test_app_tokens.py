"""The dashboard on a language model's routing record (a tiny two-layer Mixtral built from a config,
random weights, three synthetic sources): no labels, one row per token, one gate per layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from apptest_support import (  # noqa: F401  (fixtures)
    PAGES,
    _app_on_path,
    _env,
    assert_clean,
    run_page,
)

from analysis.collection import NO_LABELS

transformers = pytest.importorskip("transformers", reason="pip install 'cesaa[transformers]'")

SOURCES = ["code", "prose", "numbers"]


@pytest.fixture(scope="module")
def token_rec(tmp_path_factory) -> Path:
    from test_records_transformers import _tokenizer

    from analysis.records.transformers_moe import record_transformers

    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(
        vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    model = transformers.MixtralForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):  # source s draws its tokens from ids 16 s .. 16 s + 15
        src = torch.arange(6) % 3
        ids = (src * 16)[:, None] + torch.randint(0, 16, (6, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 9:] = 0
        batches.append({"input_ids": ids * mask, "attention_mask": mask, "source": src})
    out = tmp_path_factory.mktemp("tokrecs") / "mixtral"
    record_transformers(model, batches, domain="source", domains=SOURCES, out=out,
                        tokenizer=_tokenizer(), sample_size=60)  # fmt: skip
    return out


def _run(page: str, path: Path, **state):
    return run_page(page, path, nav_folder=str(path.parent), **state)


@pytest.mark.parametrize("page", [*PAGES, "tokens"])
def test_label_free_record_opens_on_every_page(token_rec, page):
    at = _run(page, token_rec, emb_method="PCA", emb_sample=60)
    assert not at.exception, [e.value for e in at.exception]
    notes = [x.value for x in (*at.info, *at.caption)]
    if page in ("overview", "experts", "compare"):
        assert any(NO_LABELS in n for n in notes), notes
    if page == "compare":  # B is a checkpoint on other data: the routing comparison refuses
        errors = [e.value for e in at.error]
        assert all("not evaluated on the same data" in e for e in errors), errors
    else:
        assert not at.error, [e.value for e in at.error]


def test_tokens_page_every_layer_and_the_coloured_text(token_rec):
    df = pd.read_parquet(token_rec / "rows.parquet")
    at = _run("tokens", token_rec)
    assert_clean(at)
    assert list(at.selectbox(key="tk_layer").options) == ["layer0", "layer1"]
    for layer in ("layer0", "layer1"):
        at.selectbox(key="tk_layer").select(layer).run()
        assert_clean(at)
        heat = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("tk_soft"))
        import json

        from apptest_support import arr

        z = arr(json.loads(heat.proto.spec)["data"][0]["z"])
        want = df.groupby("domain")[[f"p.{layer}.{e}" for e in range(4)]].mean().to_numpy()
        np.testing.assert_allclose(z, want, atol=1e-4)
        html = [h.proto.body for h in at.get("html")]
        assert len(html) == 3  # three sequences of the first source
        first = df[df["keep.sequence"] == 0]  # a code sequence with 3 padded positions dropped
        assert html[0].count("<span title=") == len(first) == 9
        colour = f"hsl({round(360 * int(first[f'top.{layer}.0'].iloc[0]) / 4)}, 70%, 82%)"
        assert colour in html[0].split("</span>")[0]
        assert f">{first['keep.token'].iloc[0]}</span>" in html[0]


def test_tokens_page_says_what_it_needs_on_a_checkpoint():
    at = run_page("tokens")
    assert_clean(at)
    assert any("one row per token" in i.value for i in at.info)


def test_experts_page_describes_experts_by_their_tokens(token_rec):
    import json

    at = _run("experts", token_rec)
    assert_clean(at)
    fig = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("ex_logodds"))
    labels = json.loads(fig.proto.spec)["data"][0]["y"]
    features = {lbl.split(" = ")[0] for lbl in labels}
    assert "token" in features and "sequence" not in features, features
