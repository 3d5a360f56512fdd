"""The program report as one self-contained HTML page for marketers: inline SVG bar charts, no
script, no font or stylesheet fetched from anywhere, so it opens offline and can be mailed as is.
Every text from the database is escaped."""

from __future__ import annotations

from html import escape

BAR_COLOURS = ("#2f6fb3", "#e08a1e", "#3a9a5b", "#b3402f", "#7a5bb3", "#5b8fa8")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 75em; color: #222;
       padding: 0 1em; }
.wide { overflow-x: auto; max-width: 100%; } td.n { white-space: nowrap; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0 1em; } td, th { padding: .25em .8em; border-bottom: 1px solid #eee; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; } .figure { background: #f5f7fa; padding: .8em 1.2em; border-radius: 6px; }
.figure b { display: block; font-size: 1.5em; } .warning { color: #8a1f11; } svg text { font-size: 12px; fill: #222; }
"""


def bar_chart(items: list[tuple[str, float]], *, unit: str = "", decimals: int = 0, width: int = 640) -> str:
    """A horizontal bar chart as inline SVG: one labelled bar per item, its value at the end."""
    if not items:
        return "<p>Nothing to show.</p>"
    row, value_width = 26, 90
    longest = max(len(str(label)) for label, _ in items)  # 12px text: about 7px a character
    label_width = min(max(120, 7 * longest + 16), 360)
    width = max(width, label_width + value_width + 200)
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
    return '<div class="wide">' + "".join(parts) + "</div>"  # on a phone the chart scrolls, the page does not


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{escape(_fmt(cell))}</td>' if isinstance(cell, (int, float)) and not isinstance(cell, bool)
            else f"<td>{_breakable(_fmt(cell))}</td>" for cell in row
        ) + "</tr>"
        for row in rows
    )
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _breakable(text: str) -> str:
    """Escaped, with a line-break opportunity after each ``_`` (``points_<wbr>expiring``): a long
    campaign id or reason wraps at its words instead of widening its table."""
    return escape(text).replace("_", "_<wbr>")


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _interval(ci: list[float] | None) -> str:
    return "-" if ci is None else f"{ci[0]:+.1f} to {ci[1]:+.1f} pp"


def _variants_section(data: dict) -> str:
    """Per A/B variant: sent, conversions, rate, uplift against the holdout and the difference with the
    first variant, each with its interval; empty when no campaign tested variants in the period."""
    tested = [c for c in data["campaigns"] if c.get("variants")]
    if not tested:
        return ""
    test = data.get("variant_test", {})
    level = f"{test.get('confidence', 0.95):.0%}"
    rows = [[c["campaign"], v["variant"], v["sent"], v["converted"], _pct(v["conversion_rate"]),
             "-" if v["uplift_pp"] is None else f"{v['uplift_pp']:+.1f}", _interval(v["uplift_ci_pp"]),
             "-" if v.get("difference_pp") is None else f"{v['difference_pp']:+.1f} vs {v['compared_with']}",
             _interval(v.get("difference_ci_pp"))]
            for c in tested for v in c["variants"]]
    return ("<h2>A/B variants</h2>" + bar_chart(
        [(f"{c['campaign']}, {v['variant']}", round(v["conversion_rate"] * 100, 1))
         for c in tested for v in c["variants"] if v["conversion_rate"] is not None], unit="%", decimals=1)
        + _table(["campaign", "variant", "sent", "converted", "conversion rate", "uplift vs holdout (pp)",
                  f"{level} interval", "vs first variant (pp)", f"{level} interval"], rows)
        + f"<p>Intervals: {escape(test.get('interval', ''))}, {level}. An interval that contains 0 cannot tell the "
          "two rates apart yet.</p>")


def _samples_section(samples: list[dict]) -> str:
    """Links to each campaign's message rendered for the sample member (files next to the page)."""
    if not samples:
        return ""
    rows = "".join(
        f"<tr><td>{_breakable(s['campaign'])}</td><td>{_breakable(s['variant'] or '-')}</td><td>{escape(s['locale'])}</td>"
        f"<td>{escape(s['channel'])}</td><td><a href=\"{escape(s['href'])}\">{escape(s['title'] or s['href'])}</a>"
        + (f" (<a href=\"{escape(s['text_href'])}\">text</a>)" if s.get("text_href") else "") + "</td></tr>"
        for s in samples)
    return ("<h2>Sample messages</h2><p>Each campaign's message as the sample member would get it, rendered to a "
            "file next to this page.</p><div class=\"wide\"><table><thead><tr><th>campaign</th><th>variant</th>"
            f"<th>locale</th><th>channel</th><th>message</th></tr></thead><tbody>{rows}</tbody></table></div>")


def _feedback_section(data: dict) -> str:
    """Bounce and complaint rates of each campaign's emails, with the warnings past 0.1% complaints."""
    feedback = data.get("email_feedback") or {}
    lines = feedback.get("campaigns") or []
    if not lines and not feedback.get("untraced"):
        return ""
    warnings = "".join(f'<p class="warning"><b>Warning:</b> {escape(w)}</p>' for w in feedback.get("warnings", []))
    untraced = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in (feedback.get("untraced") or {}).items())
    return ("<h2>Email bounces and complaints</h2>" + warnings
            + _table(["campaign", "emails sent", "bounced", "of which hard", "bounce rate", "complaints", "complaint rate"],
                     [[c["campaign"], c["emails_sent"], c["bounced"], c["hard_bounced"], _pct(c["bounce_rate"]),
                       c["complaints"], f"{c['complaint_rate'] * 100:.2f}%" if c["complaint_rate"] is not None else "-"]
                      for c in lines])
            + (f"<p>Not traced to an email: {escape(untraced)}.</p>" if untraced else ""))


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
        _variants_section(data),
        _feedback_section(data),
        _samples_section(data.get("samples") or []),
        "<h2>Skipped, by reason</h2>" + _table(["campaign", "reason", "deliveries"],
                                               [[c["campaign"], reason, n] for c in campaigns
                                                for reason, n in c["skipped_by_reason"].items()]),
    ]
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Loyalty program report</title>"
            f"<style>{_STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>\n")
