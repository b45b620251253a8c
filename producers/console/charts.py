"""The overview's charts, drawn on the server as SVG (no script: the CSP stays ``script-src 'self'``, and they read
without JavaScript): per minute over the last hour or day, from igsend.core.series."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from igsend.core.series import Series

WIDTH, HEIGHT = 720, 140
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 22
#: Colours a colour-blind reader tells apart (Okabe-Ito).
COLOURS = {"delivered": "#009e73", "dead": "#d55e00", "throttled": "#e69f00", "waiting": "#0072b2",
           "p50": "#56b4e9", "p95": "#cc79a7"}
RANGES = {"hour": 60, "day": 1440}


@dataclass(frozen=True)
class Chart:
    """One chart: its title, the line of each series (None: no value that minute), and a summary a screen reader
    and a reader without SVG get."""

    title: str
    svg: Markup
    summary: str


def combine(parts: Sequence[Series]) -> Series:
    """The series of several Redis groups added up (latency buckets too)."""
    if len(parts) == 1:
        return parts[0]
    total = Series(start=parts[0].start)
    for name in ("delivered", "dead", "throttled", "waiting"):
        setattr(total, name, [sum(values) for values in zip(*(getattr(p, name) for p in parts), strict=True)])
    total.latency = [[sum(b) for b in zip(*minute, strict=True)] for minute in zip(*(p.latency for p in parts),
                                                                                    strict=True)]
    return total


def charts(series: Series, *, label: str) -> list[Chart]:
    """Outcomes, waiting and latency of ``series`` (``label``: the account's name, or "every account")."""
    minutes = len(series.delivered)
    outcomes = {"delivered": series.delivered, "dead": series.dead, "throttled": series.throttled}
    p50, p95 = series.latency_quantile(0.5), series.latency_quantile(0.95)
    finite_p95 = [v for v in p95 if v is not None and v != float("inf")]
    return [
        Chart(f"Outcomes per minute: {label}", _svg(series.start, outcomes, unit=""),
              ", ".join(f"{name} {sum(values):,}" for name, values in outcomes.items()) + f" in {minutes} min"),
        Chart(f"Waiting: {label}", _svg(series.start, {"waiting": series.waiting}, unit=""),
              f"waiting now {series.waiting[-1]:,}, at most {max(series.waiting):,}"),
        Chart(f"Latency, queued to Meta's answer (bucket upper bound): {label}",
              _svg(series.start, {"p50": _capped(p50), "p95": _capped(p95)}, unit=" s"),
              f"p95 at most {max(finite_p95):g} s" if finite_p95 else "nothing delivered"),
    ]


def _capped(values: list[float | None]) -> list[float | None]:
    """The slowest bucket has no upper bound: drawn at twice the last bound."""
    return [None if v is None else (120.0 if v == float("inf") else v) for v in values]


def _svg(start: float, lines: Mapping[str, Sequence[float | None]], *, unit: str) -> Markup:
    count = max(len(values) for values in lines.values())
    top = max([v for values in lines.values() for v in values if v is not None] + [0]) or 1
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (width * i / max(1, count - 1))

    def y(v: float) -> float:
        return TOP + height - height * v / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
             f'height="{HEIGHT}" role="img" class="chart">',
             f'<line x1="{LEFT}" y1="{TOP + height}" x2="{WIDTH - RIGHT}" y2="{TOP + height}" stroke="#888"/>',
             f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10">{escape(_number(top))}{unit}</text>',
             f'<text x="{LEFT - 4}" y="{TOP + height}" text-anchor="end" font-size="10">0</text>']
    for i, anchor in ((0, "start"), (count // 2, "middle"), (count - 1, "end")):
        stamp = time.strftime("%H:%M", time.gmtime(start + 60 * i))
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}" font-size="10">{stamp}</text>')
    for legend, (name, values) in enumerate(lines.items()):
        colour = COLOURS[name]
        parts.append(f'<text x="{LEFT + 6 + 90 * legend}" y="{TOP + 10}" font-size="10" fill="{colour}">'
                     f'{escape(name)}</text>')
        for run in _runs(values):
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" stroke-linecap="round" '
                         f'points="{points}"><title>{escape(name)}</title></polyline>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive minutes that have a value (a gap where there is none); a lone minute is drawn as a dot."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, v))
    return [run if len(run) > 1 else run * 2 for run in runs if run]


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"
