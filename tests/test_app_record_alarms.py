"""The record Overview at many domains summarizes alarms by domain group, as the checkpoint
Overview does (issue 12): one headline per kind of per-domain alarm, each domain's own alarm in
an expander."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from apptest_support import _app_on_path, _env, run_page  # noqa: F401  (fixtures)

from analysis.records import ExpertInfo, GateInfo, RecordMeta, RecordWriter

D = 24  # domains; past the 8 at which the Overviews fold per-domain alarms
E = 24  # experts: domain d routes to experts d and d + 1, so no two domains route alike
FLAT = 10  # domains d00..d09 get one constant prediction: chance AUC and constant predictions
ROWS = 200  # rows per domain
NAMES = [f"d{i:02d}" for i in range(D)]


@pytest.fixture(scope="module")
def many_domain_record(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    dom = np.repeat(np.arange(D), ROWS)
    n = len(dom)
    label = np.tile(np.arange(ROWS) % 2, D).astype(float)  # both labels in every domain
    pred = 0.2 + 0.6 * label + rng.uniform(0, 0.1, n)  # ranks perfectly: AUC 1
    pred[dom < FLAT] = 0.3
    probs = np.full((n, E), 0.1 / (E - 2))
    probs[np.arange(n), dom] = 0.45
    probs[np.arange(n), (dom + 1) % E] = 0.45
    top = np.stack([dom, (dom + 1) % E], axis=1)
    experts = tuple(ExpertInfo(f"e{i}") for i in range(E))
    meta = RecordMeta(model_name="toy", domains=tuple(NAMES), gates=(GateInfo("gate", experts, 2),))
    path = tmp_path_factory.mktemp("recs") / "many-domains"
    with RecordWriter(path, meta) as w:
        w.write(domain=dom, label=label, prediction=pred, probs={"gate": probs}, topk={"gate": top})
    return path


def test_record_overview_summarizes_alarms_by_domain_group(many_domain_record):
    path = many_domain_record
    at = run_page("overview", path, nav_folder=str(path.parent))
    assert not at.exception, [e.value for e in at.exception]
    flat = ", ".join(NAMES[:5]) + f" and {FLAT - 5} more"
    heads = [
        f"**AUC no better than chance in {FLAT} of {D} domains: {flat}**",
        f"**constant predictions in {FLAT} of {D} domains: {flat}**",
    ]
    shown = [e.value for e in at.error]
    for head in heads:
        assert head in shown, shown
    expanders = {e.label: e for e in at.expander}
    for code in ("domain_auc_chance", "constant_predictions"):
        detail = expanders[f"Per-domain detail: {code} ({FLAT} alarms)"]
        boxes = [b.value for b in detail.error]
        assert len(boxes) == FLAT
        for name, box in zip(NAMES[:FLAT], boxes, strict=True):
            assert box.startswith(f"**{name}: ")
    # nothing else fires: the two headlines and the 2 x 10 per-domain boxes are every alarm
    assert len(shown) == 2 + 2 * FLAT and not at.warning
