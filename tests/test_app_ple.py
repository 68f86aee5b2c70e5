"""AppTest: a PLE checkpoint in the dashboard shows its experts by global index, labelled by kind,
and its knock-out / k controls work per row's gate.  Harness: ``apptest_support``."""

from __future__ import annotations

from apptest_support import (  # noqa: F401  (fixtures and the skip mark are used by name)
    _app_on_path,
    _env,
    arr,
    assert_clean,
    charts,
    pytestmark,
    run_page,
)


def test_ple_checkpoint_names_its_experts_and_knocks_out_one_network(tmp_path):
    at = run_page("train")
    at.number_input(key="tr_rows").set_value(2000)
    at.number_input(key="tr_domains").set_value(3)
    at.number_input(key="tr_epochs").set_value(1)
    at.selectbox(key="tr_model").set_value("ple")
    at.text_input(key="tr_name").set_value("tiny-ple")
    at.button(key="tr_go").click().run(timeout=120)
    assert_clean(at)
    at.switch_page("views/routing.py").run()
    assert_clean(at)
    heat = charts(at)["rt_soft"]["data"][0]
    z = arr(heat["z"])  # [3 domains, 3 x 2 specific + 1 shared]
    assert z.shape == (3, 7)
    assert list(heat["x"])[-1] == "expert 6 (shared)"
    assert list(heat["x"])[0].endswith(" only)")
    for d in range(3):  # P(expert | domain) is zero on the other domains' specific experts
        other = [j for j in range(6) if j // 2 != d]
        assert (z[d, other] == 0).all() and (z[d, 2 * d : 2 * d + 2] > 0).all()

    assert any("Load CV not shown" in c.value and "domain sizes" in c.value for c in at.caption)

    at.switch_page("views/ablations.py").run()
    assert_clean(at)
    assert at.slider(key="abl_k").max == 3  # 2 specific + 1 shared under each gate
    at.multiselect(key="abl_knock").set_value([0]).run()
    assert_clean(at)
    assert at.slider(key="abl_k").max == 2  # domain 0's gate has 2 left
    now = arr(charts(at)["abl_heat_now"]["data"][0]["z"])
    assert now[0, 0] == 0 and now[1:, 0].sum() == 0
    at.multiselect(key="abl_knock").set_value([0, 1, 6]).run()  # domain 0 has nothing left
    assert not at.exception
    assert any("no expert" in e.value for e in at.error)
    for page in ("information", "embeddings"):  # alarms may fire on a tiny model
        at.switch_page(f"views/{page}.py").run(timeout=120)
        assert not at.exception, page
        cards = [
            e.value for e in at.error if e.value.startswith("**Cannot") or "Unexpected" in e.value
        ]
        assert not cards, (page, cards)
