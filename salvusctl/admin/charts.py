"""Server-rendered SVG line charts (no JavaScript, no external assets; CSP-friendly)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from html import escape

__all__ = ["lineChart"]


def _clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S")


def lineChart(
    points: Sequence[tuple[float, float]],
    title: str,
    label: Callable[[float], str] = lambda v: f"{v:.1f}",
    width: int = 640,
    height: int = 180,
    css_class: str = "chart",
) -> str:
    """An SVG chart of (time, value) points: a polyline with its min/max and time range labelled.

    Fewer than two points give a chart that says so, so the page never breaks on a new instance.
    """
    pad_left, pad_right, pad_top, pad_bottom = 64, 12, 22, 24
    inner_w = width - pad_left - pad_right
    inner_h = height - pad_top - pad_bottom
    parts = [
        f'<svg class="{escape(css_class)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{pad_left}" y="15" class="title">{escape(title)}</text>',
        f'<rect x="{pad_left}" y="{pad_top}" width="{inner_w}" height="{inner_h}" class="frame"/>',
    ]
    points = sorted((float(t), float(v)) for t, v in points if t is not None and v is not None)
    if len(points) < 2:
        parts.append(
            f'<text x="{pad_left + 10}" y="{pad_top + inner_h / 2}" class="empty">'
            "not enough samples yet</text>"
        )
        parts.append("</svg>")
        return "".join(parts)
    t0, t1 = points[0][0], points[-1][0]
    vmin = min(0.0, min(v for _, v in points))
    vmax = max(v for _, v in points)
    if vmax <= vmin:
        vmax = vmin + 1.0
    span_t = (t1 - t0) or 1.0

    def xy(t: float, v: float) -> str:
        x = pad_left + (t - t0) / span_t * inner_w
        y = pad_top + inner_h - (v - vmin) / (vmax - vmin) * inner_h
        return f"{x:.1f},{y:.1f}"

    parts.append(f'<polyline class="line" points="{" ".join(xy(t, v) for t, v in points)}"/>')
    parts.append(
        f'<text x="{pad_left - 4}" y="{pad_top + 10}" class="axis" text-anchor="end">'
        f"{escape(label(vmax))}</text>"
    )
    parts.append(
        f'<text x="{pad_left - 4}" y="{pad_top + inner_h}" class="axis" text-anchor="end">'
        f"{escape(label(vmin))}</text>"
    )
    parts.append(f'<text x="{pad_left}" y="{height - 6}" class="axis">{_clock(t0)}</text>')
    parts.append(
        f'<text x="{width - pad_right}" y="{height - 6}" class="axis" text-anchor="end">'
        f"{_clock(t1)} UTC</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
