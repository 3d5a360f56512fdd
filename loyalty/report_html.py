"""The program report as one self-contained HTML page for marketers: inline SVG bar charts, no
script, no font or stylesheet fetched from anywhere, so it opens offline and can be mailed as is.
Every text from the database is escaped."""

from __future__ import annotations

from html import escape

BAR_COLOURS = ("#2f6fb3", "#e08a1e", "#3a9a5b", "#b3402f", "#7a5bb3", "#5b8fa8")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0 1em; } td, th { padding: .25em .8em; border-bottom: 1px solid #eee; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; } .figure { background: #f5f7fa; padding: .8em 1.2em; border-radius: 6px; }
.figure b { display: block; font-size: 1.5em; } svg text { font-size: 12px; fill: #222; }
"""


def bar_chart(items: list[tuple[str, float]], *, unit: str = "", decimals: int = 0, width: int = 640) -> str:
    """A horizontal bar chart as inline SVG: one labelled bar per item, its value at the end."""
    if not items:
        return "<p>Nothing to show.</p>"
    label_width, row, value_width = 180, 26, 90
    biggest = max((value for _, value in items), default=0) or 1
    plot = width - label_width - value_width
    height = row * len(items) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for index, (label, value) in enumerate(items):
        y = 5 + index * row
        length = max(plot * value / biggest, 1 if value else 0)
        colour = BAR_COLOURS[index % len(BAR_COLOURS)]
        shown = f"{value:,.{decimals}f}"
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end">{escape(str(label))}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" fill="{colour}">'
            f"<title>{escape(str(label))}: {shown}{escape(unit)}</title></rect>"
            f'<text x="{label_width + length + 6:.1f}" y="{y + 16}">{shown}{escape(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{escape(_fmt(cell))}</td>' if isinstance(cell, (int, float)) and not isinstance(cell, bool)
            else f"<td>{escape(_fmt(cell))}</td>" for cell in row
        ) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render_report(data: dict) -> str:
    points, rates, campaigns = data["points"], data["rates"], data["campaigns"]
    worth = points.get("outstanding_value")
    figures = [
        ("points issued", f"{points['issued']:,}"), ("redeemed", f"{points['redeemed']:,}"),
        ("expired", f"{points['expired']:,}"),
        ("outstanding", f"{points['outstanding']:,}" + (f" ({worth['amount']} {worth['currency']})" if worth else "")),
        ("redemption rate", _pct(rates["redemption_rate"])), ("adoption rate", _pct(rates["adoption_rate"])),
    ]
    sections = [
        f"<h1>Loyalty program report</h1><p>{escape(data['period'].get('words', ''))}; a conversion is an order "
        f"within {data['conversion_days']} days of a message.</p>",
        '<div class="figures">'
        + "".join(f'<div class="figure"><b>{escape(v)}</b>{escape(k)}</div>' for k, v in figures) + "</div>",
        "<h2>Points</h2>" + bar_chart([("issued", points["issued"]), ("redeemed", points["redeemed"]),
                                       ("expired", points["expired"]), ("adjusted down", points["adjusted_down"]),
                                       ("outstanding", points["outstanding"])], unit=" pts"),
        "<h2>Points issued by source</h2>"
        + bar_chart([(r["source"], r["points"]) for r in data["points_by_source"]], unit=" pts"),
        "<h2>Members by tier (today)</h2>" + bar_chart(list(data["members_by_tier"].items())),
        "<h2>Top earners</h2>" + _table(["member", "tier", "earned", "balance"],
                                        [[r["member"], r["tier"], r["earned"], r["balance"]] for r in data["top_earners"]]),
        "<h2>Campaigns: sent</h2>" + bar_chart([(c["campaign"], c["sent"]) for c in campaigns]),
        "<h2>Campaigns: conversion rate, sent and held out</h2>" + bar_chart(
            [(f"{c['campaign']}, {group}", round(rate * 100, 1))
             for c in campaigns
             for group, rate in (("sent", c["conversion_rate"]), ("held out", c["held_out_conversion_rate"]))
             if rate is not None], unit="%", decimals=1),
        _table(["campaign", "planned", "sent", "skipped", "failed", "unknown", "held out", "pending", "converted",
                "conversion rate", "held-out rate", "uplift (pp)"],
               [[c["campaign"], c["planned"], c["sent"], c["skipped"], c["failed"], c["unknown"], c["held_out"],
                 c["pending"], c["converted"], _pct(c["conversion_rate"]), _pct(c["held_out_conversion_rate"]),
                 "-" if c["uplift_pp"] is None else f"{c['uplift_pp']:+.1f}"] for c in campaigns]),
        "<h2>Skipped, by reason</h2>" + _table(["campaign", "reason", "deliveries"],
                                               [[c["campaign"], reason, n] for c in campaigns
                                                for reason, n in c["skipped_by_reason"].items()]),
    ]
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Loyalty program report</title>"
            f"<style>{_STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>\n")
