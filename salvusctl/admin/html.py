"""HTML building for the admin pages: escaped by default, one layout, no JavaScript."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

__all__ = ["esc", "layout", "table", "button", "url", "STYLE"]

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f23;background:#f6f8fa}
header{background:#24292e;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none}header a.here{text-decoration:underline}
header .who{margin-left:auto;opacity:.8}
main{padding:16px}
table{border-collapse:collapse;background:#fff;margin-bottom:16px}
th,td{border:1px solid #d1d5da;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#eaecef}
td form,p form{display:inline;margin:0 4px 0 0}
.RUNNING,.up{color:#22863a;font-weight:600}.STOPPED,.EXITED,.maint,.down{color:#6a737d;font-weight:600}
.FATAL,.BACKOFF,.failing{color:#cb2431;font-weight:600}.STARTING,.STOPPING,.drain{color:#b08800;font-weight:600}
.flash{background:#fffbdd;border:1px solid #d9d0a5;padding:6px 10px;margin-bottom:12px}
.error{background:#ffeef0;border-color:#d73a49}
pre.log{background:#fff;border:1px solid #d1d5da;padding:8px;max-height:360px;overflow:auto}
svg.chart{background:#fff;border:1px solid #d1d5da;margin:4px 8px 8px 0}
svg .frame{fill:none;stroke:#e1e4e8}svg .line{fill:none;stroke:#0366d6;stroke-width:1.5}
svg .title{font-size:12px;font-weight:600}svg .axis,svg .empty{font-size:10px;fill:#586069}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:#fff;border:1px solid #d1d5da;padding:8px 14px;min-width:140px}
.card b{font-size:20px;display:block}
input[type=number]{width:4.5em}
"""

_NAV = [("/", "Overview"), ("/deploys", "Deploys"), ("/balancer", "Balancer"), ("/alerts", "Alerts"),
        ("/backups", "Backups"), ("/cluster", "Cluster")]


def esc(value: Any) -> str:
    """Escape anything for HTML text or attribute values."""
    return escape("" if value is None else str(value), quote=True)


def url(*parts: str) -> str:
    """A path from segments, each percent-encoded (instance names hold colons)."""
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


def layout(
    title: str,
    body: str,
    *,
    host: str,
    user: Any,
    refresh: int,
    project_url: str | None,
    here: str,
    site_title: str = "Salvus",
    flash: str | None = None,
    error: bool = False,
) -> bytes:
    """A whole page: header navigation, optional refresh and project link, the body."""
    here_attr = ' class="here"'
    nav = "".join(
        f'<a href="{path}"{here_attr if path == here else ""}>{esc(name)}</a>' for path, name in _NAV
    )
    project = f'<a href="{esc(project_url)}" rel="noopener">Project</a>' if project_url else ""
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    who = f'<span class="who">{esc(user.name)} ({esc(user.role)}) on {esc(host)}</span>' if user else ""
    message = (
        f'<div class="flash{" error" if error else ""}" role="status">{esc(flash)}</div>' if flash else ""
    )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'>{meta}"
        f"<title>{esc(title)} · {esc(site_title)} · {esc(host)}</title><style>{STYLE}</style></head><body>"
        f"<header><strong>{esc(site_title)}</strong>{nav}{project}{who}</header>"
        f"<main><h1>{esc(title)}</h1>{message}{body}</main></body></html>"
    )
    return page.encode("utf-8")


def table(headers: list[str], rows: list[list[str]], **attrs: str) -> str:
    """A table; cells are already-escaped HTML fragments."""
    extra = "".join(f' {k.rstrip("_")}="{esc(v)}"' for k, v in attrs.items())
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr{}>{}</tr>".format(
            f' id="{esc(row[0][4:])}"' if row and row[0].startswith("#id:") else "",
            "".join(f"<td>{c}</td>" for c in (row[1:] if row and row[0].startswith("#id:") else row)),
        )
        for row in rows
    )
    return f"<table{extra}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def button(action: str, label: str, csrf: str, fields: dict[str, str] | None = None) -> str:
    """A one-button POST form carrying the CSRF token (works without JavaScript)."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (fields or {}).items()
    )
    return (
        f'<form method="post" action="{esc(action)}"><input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'{hidden}<button type="submit" name="do" value="{esc(label)}">{esc(label)}</button></form>'
    )
