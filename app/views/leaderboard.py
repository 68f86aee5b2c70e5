"""Leaderboard: open a `cesaa bench` output folder and show its ranking (no math here: every
number comes from the folder's leaderboard.json, formatted by cesaa.benchmark.report)."""

from __future__ import annotations

import os
from pathlib import Path

import components
import pandas as pd
import streamlit as st

from cesaa.benchmark.report import (
    DETECTABLE_NOTE,
    TALLY_NOTE,
    TITLES,
    domain_rows,
    overall_rows,
    read_leaderboard,
    tally_rows,
)

st.title("Leaderboard")
st.write(
    "Models compared by `cesaa bench`: tuned with the same budget on validation, then ranked on "
    "test over seeds, with each model's seed-paired difference to the best."
)

folder = st.text_input(
    "Benchmark folder",
    value=os.environ.get("CESAA_BENCH_DIR", ""),
    key="lb_folder",
    placeholder="runs/bench",
    help="The --out folder of a `cesaa bench` run (it holds leaderboard.json).",
)
if not folder.strip():
    st.info(
        "Enter the output folder of a benchmark run, e.g. after "
        "`cesaa bench --data synthetic --models cesaa,mmoe,mlp --seeds 3 --out runs/bench`."
    )
    st.stop()
try:
    lb = read_leaderboard(folder.strip())
except (FileNotFoundError, ValueError, OSError) as e:
    components.error_card(
        "Cannot open this benchmark folder",
        str(e),
        "Point the field at the --out folder of a finished `cesaa bench` run.",
    )
    st.stop()

for key in ("command", "data", "protocol", "budget", "machine", "finished"):
    if lb.meta.get(key):
        st.markdown(
            f"**{key.capitalize()}**: `{lb.meta[key]}`"
            if key == "command"
            else f"**{key.capitalize()}**: {lb.meta[key]}"
        )

st.subheader("Overall (test)")
cols, rows = overall_rows(lb)
st.dataframe(pd.DataFrame(rows, columns=cols), hide_index=True, key="lb_overall")
st.caption(
    f"Mean ± std over seeds.  Δ: model minus the best, paired by seed, {lb.level:.0%} Student-t "
    "interval; p: paired t-test, Holm-corrected over the models compared with the best.  "
    + DETECTABLE_NOTE
    + "  Stalled: seeds whose run ended on a plateau or at the epoch cap while still improving "
    "(docs/training.md); their difference measures the training, not the model."
)

if lb.domains:
    st.subheader("Per domain (test)")
    metric = st.radio(
        "Metric", list(TITLES), format_func=TITLES.get, horizontal=True, key="lb_metric"
    )
    cols, rows = tally_rows(lb, metric)
    st.dataframe(pd.DataFrame(rows, columns=cols), hide_index=True, key="lb_tally")
    st.caption(f"{TALLY_NOTE}  {len(lb.domains)} domains.")
    cols, rows = domain_rows(lb, metric)
    st.dataframe(pd.DataFrame(rows, columns=cols), hide_index=True, key="lb_domains")
    st.caption("* marks each domain's best model.")

html = Path(folder.strip()) / "leaderboard.html"
if html.is_file():
    st.download_button(
        "Download the HTML page", html.read_bytes(), "leaderboard.html", "text/html", key="lb_html"
    )
