"""A line chart as inline SVG, rendered on the server: the status page needs no
JavaScript and no external resource. Every text is escaped."""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from typing import Mapping, Sequence


def _e(value) -> str:
    return html.escape(str(value), quote=True)


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4 or 10 times a power of ten that is >= ``value``: a
    y-axis top whose quarters read well."""
    if not value > 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 4, 10) if m * power >= value * (1 - 1e-12))


def line_chart(title: str, series: Mapping[str, Sequence[tuple[float, float]]], *,
               percent: bool = False, width: int = 720, height: int = 240) -> str:
    """An inline SVG line chart: x is time (UTC), one line and legend entry per series."""
    left, right, top, bottom = 60, 190, 30, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for values in series.values() for p in values]
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    if t1 - t0 < 1e-9:
        t0, t1 = t0 - 30, t1 + 30
    y_max = 1.0 if percent else _nice_ceiling(max(y for _, y in points))

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    def y_text(v: float) -> str:
        return f"{v * 100:.0f}%" if percent else f"{v:.3g}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f"<title>{_e(title)}</title>",
             f'<text x="{left}" y="18" class="chart-title">{_e(title)}</text>']
    for i in range(5):
        v = y_max * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{_e(y_text(v))}</text>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        stamp = datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S UTC")
        parts.append(f'<text x="{x(t):.1f}" y="{height - 12}" text-anchor="{anchor}" class="tick">{stamp}</text>')
    parts.append(f'<g class="legend" transform="translate({left + plot_w + 16},{top})">')
    for i, name in enumerate(sorted(series)):
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="0" y="{i * 18}" width="12" height="12" fill="{color}"/>'
                     f'<text x="18" y="{i * 18 + 10}" class="legend-name">{_e(name)}</text>')
    parts.append("</g>")
    for i, name in enumerate(sorted(series)):
        # Each line thinner than the one before: equal values still show every colour.
        color, stroke, radius = PALETTE[i % len(PALETTE)], max(1.0, 4.5 - i), max(1.5, 5.0 - i)
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series[name])
        if len(series[name]) > 1:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{stroke:g}"/>')
        parts.extend(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="{radius:g}" fill="{color}"><title>{_e(name)}: '
                     f'{_e(y_text(v))}</title></circle>' for t, v in series[name])
    parts.append("</svg>")
    return "".join(parts)
