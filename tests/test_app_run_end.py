"""The Overview says how the run ended (meta.json's ``run_end``, cesaa.convergence): a warning for a
stalled run, a caption for a converged one, nothing for checkpoints written before the detector."""

from __future__ import annotations

import json
import shutil

from apptest_support import (  # noqa: F401  (fixtures and the skip mark are used by name)
    DEFAULT,
    _app_on_path,
    _env,
    assert_clean,
    pytestmark,
    run_page,
)

from cesaa.convergence import classify_run


def _with_end(root, name, end):
    path = root / name
    shutil.copytree(DEFAULT, path)
    meta = json.loads((path / "meta.json").read_text())
    if end is None:
        meta.pop("run_end", None)
    else:
        meta["run_end"] = end.to_dict()
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_overview_warns_about_a_stalled_run(monkeypatch, tmp_path):
    root = tmp_path / "ck"
    flat = classify_run(
        [0.49, 0.50, 0.50], epochs_cap=30, stopped_early=True, patience=2, reference=0.5
    )
    rising = classify_run(
        [0.6, 0.7, 0.75], epochs_cap=3, stopped_early=False, patience=2, reference=0.5
    )
    done = classify_run(
        [0.6, 0.7, 0.69, 0.68], epochs_cap=30, stopped_early=True, patience=2, reference=0.5
    )
    paths = {
        "flat": _with_end(root, "flat", flat),
        "rising": _with_end(root, "rising", rising),
        "done": _with_end(root, "done", done),
        "old": _with_end(root, "old", None),
    }
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(root))
    texts = {}
    for name, path in paths.items():
        at = run_page("overview", path)
        assert_clean(at)
        texts[name] = ([w.value for w in at.warning], [c.value for c in at.caption])
    assert any("stalled on a plateau" in w for w in texts["flat"][0])
    assert any("did not converge" in w and "3-epoch cap" in w for w in texts["rising"][0])
    assert not any("converge" in w or "plateau" in w for w in texts["done"][0])
    assert any("The run converged" in c for c in texts["done"][1])
    for name in ("done", "old"):
        assert not any("plateau" in w or "did not converge" in w for w in texts[name][0])
    assert not any("converged" in c for c in texts["old"][1])
