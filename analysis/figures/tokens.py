"""Token-level figures of a language model's routing record: text coloured by expert.

Shapes: n = tokens of one sequence, k = experts a token selects, E = experts of the layer.

``token_text_html`` is the classic figure of MoE routing papers (e.g. OLMoE, Mixtral): each token
of a text on a background of its top-1 expert's colour at one layer, the top-k experts and their
probabilities in the token's tooltip.  It returns self-contained HTML (no script), so the report
and the dashboard (``st.html``) show the same thing.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np


def expert_colour(e: int, num_experts: int) -> str:
    """A light background colour for expert e: hues evenly spaced around the wheel."""
    hue = round(360 * (e % max(num_experts, 1)) / max(num_experts, 1))
    return f"hsl({hue}, 70%, 82%)"


def _tooltip(top: np.ndarray, probs: np.ndarray | None) -> str:
    parts = []
    for e in top:
        p = "" if probs is None else f" ({probs[int(e)]:.2f})"
        parts.append(f"expert {int(e)}{p}")
    return ", ".join(parts)


def token_text_html(
    tokens: Sequence[str],
    top: np.ndarray,
    num_experts: int,
    *,
    probs: np.ndarray | None = None,
    expert_names: Sequence[str] | None = None,
    legend: bool = True,
) -> str:
    """HTML of ``tokens`` [n] each on the colour of its top-1 expert ``top[:, 0]`` ([n, k] selected
    experts, largest first); ``probs`` [n, E] adds each selected expert's probability to the
    tooltip.  Token text is escaped; whitespace is kept."""
    top = np.asarray(top).reshape(len(tokens), -1)
    if probs is not None and np.shape(probs) != (len(tokens), num_experts):
        raise ValueError(
            f"probs must have shape ({len(tokens)}, {num_experts}), got {np.shape(probs)}"
        )
    bad = top[(top < 0) | (top >= num_experts)]
    if bad.size:
        raise ValueError(f"expert index {int(bad[0])} outside [0, {num_experts})")
    spans = []
    for i, text in enumerate(tokens):
        e = int(top[i, 0])
        tip = html.escape(_tooltip(top[i], None if probs is None else probs[i]), quote=True)
        spans.append(
            f'<span title="{tip}" style="background:{expert_colour(e, num_experts)};'
            f'border-radius:3px;padding:0 1px;white-space:pre-wrap">{html.escape(str(text))}</span>'
        )
    body = "".join(spans)
    if not legend:
        return f'<div style="line-height:1.9;font-family:monospace">{body}</div>'
    names = (
        list(expert_names)
        if expert_names is not None
        else [f"expert {e}" for e in range(num_experts)]
    )
    used = sorted({int(e) for e in top[:, 0]})
    keys = " ".join(
        f'<span style="background:{expert_colour(e, num_experts)};border-radius:3px;'
        f'padding:0 4px">{html.escape(names[e])}</span>'
        for e in used
    )
    return (
        f'<div style="line-height:1.9;font-family:monospace">{body}</div>'
        f'<div style="font-size:0.85em;margin-top:4px">top-1 expert: {keys}</div>'
    )
