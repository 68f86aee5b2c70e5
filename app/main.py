"""cesaa dashboard: do the experts specialize per domain, or collapse?

    streamlit run app/main.py

The entry file only sets up the page, the checkpoint picker and the navigation; each page is one
short file in ``views/`` (not ``pages/``: Streamlit would also serve files there directly, without
this entry file, when a page URL is opened or reloaded) and every number comes from ``loaders``,
``derived`` and ``projections`` (which call ``cesaa`` and ``analysis``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parent
if str(APP) not in sys.path:  # `streamlit run` adds it; AppTest does not
    sys.path.insert(0, str(APP))

import components  # noqa: E402
import sidebar  # noqa: E402

st.set_page_config(page_title="cesaa dashboard", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("views/routing.py", title="Routing", icon=":material/alt_route:"),
    st.Page("views/information.py", title="Information", icon=":material/info:"),
    st.Page("views/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("views/experts.py", title="Experts", icon=":material/groups:"),
    st.Page("views/tokens.py", title="Tokens", icon=":material/text_fields:"),
    st.Page("views/rows.py", title="Rows", icon=":material/table_rows:"),
    st.Page("views/ablations.py", title="Ablations", icon=":material/tune:"),
    st.Page("views/prune.py", title="Prune", icon=":material/content_cut:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    # after Train: the browser test and bench find links by substring ("Routing over training")
    st.Page("views/evolution.py", title="Routing over training", icon=":material/timeline:"),
    st.Page("views/report.py", title="Report", icon=":material/description:"),
    st.Page("views/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:"),
]

page = st.navigation(PAGES, expanded=True)  # every page listed (Streamlit folds past 10)
sidebar.checkpoint_sidebar()
try:
    page.run()
except Exception as e:  # noqa: BLE001  (last resort: never show a traceback)
    components.error_card(
        "Unexpected error",
        f"{type(e).__name__}: {e}",
        "This is a bug in the dashboard; the other pages and checkpoints keep working.",
    )
