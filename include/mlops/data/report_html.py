"""Make the HTML reports the platform serves self-contained: nothing fetched at view time.

Great Expectations Data Docs pages load bootstrap, bootstrap-table, jQuery, popper, vega and
font-awesome from CDNs, and the index page's results table is *empty* HTML filled in by
bootstrap-table's JavaScript. With no internet (or a browser that blocks third parties) the index is
blank. :func:`make_self_contained` rewrites one page with a real HTML parser (BeautifulSoup):

* every ``<script>`` goes (external libraries and the inline code that needs them), as do inline
  event handlers and the widgets that only worked through them (filter buttons);
* every external asset goes: ``<link>`` stylesheets/icons, ``<img>`` (replaced by its alt text),
  ``<iframe>``/``<embed>``/``<object>``/``<source>``, and ``url(...)``/``@import`` of another host in
  inline CSS. The CSS GX inlines itself (its ``data_docs_default_styles.css``) stays, plus
  :data:`OFFLINE_CSS`, a small stylesheet of ours for tables, cards and status colours;
* each bootstrap-table is rendered server-side into a plain ``<table>`` from the column definitions
  and rows GX embeds in the page (Python literals, read with ``ast.literal_eval``), sorted as GX
  would, the status shown as text ("Success"/"Failed") and each row linked to its validation page;
* font-awesome status icons become text (a check mark or a cross), so results read without the font.

Links to other sites (``<a href>``) are kept: they are only followed on a click.
:func:`make_site_self_contained` applies it to every page of a built site; it is idempotent.
:func:`external_references` lists what a page would still fetch from elsewhere (tests use it).

Pure domain code: never imports airflow.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Any

#: Marker of a processed page (the id of the stylesheet we add): processing again changes nothing.
MARKER_ID = "mlops-offline-css"

#: Our stylesheet, added after GX's own: readable tables and cards without bootstrap.
OFFLINE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#212529;line-height:1.45}
a{color:#0062cc} code,pre{font-size:.9em} pre{white-space:pre-wrap}
.container-fluid{padding:12px 24px}
@media (min-width:900px){.row{display:flex;flex-wrap:nowrap;gap:18px}
 .col-md-2{flex:0 0 17%;max-width:17%}.col-md-10{flex:1 1 auto;min-width:0}}
table{border-collapse:collapse;margin:6px 0;font-size:.9em}
th,td{border:1px solid #dee2e6;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f1f3f5}
.alert{padding:6px 12px;border:1px solid #d6d8db;background:#e9ecef;border-radius:4px;margin:8px 0}
.card{border:1px solid #dee2e6;border-radius:4px;margin:10px 0}
.card-header{background:#f1f3f5;padding:4px 8px}.card-body{padding:8px}
.nav{list-style:none;padding-left:0;margin:4px 0}.nav-tabs{display:flex;gap:16px;border-bottom:1px solid #dee2e6}
.tab-pane{margin-top:10px}
.navbar{padding:6px 24px;border-bottom:1px solid #dee2e6;height:auto!important}
.breadcrumb{list-style:none;display:flex;gap:8px;padding:0;margin:4px 0}
.breadcrumb-item+.breadcrumb-item::before{content:"/ ";color:#6c757d}
.text-danger,.mlops-failed{color:#c0392b}.text-success,.mlops-success{color:#1e7e34}
.mlops-failed,.mlops-success{font-weight:600}
.mlops-icon{font-style:normal;font-weight:700}
.mlops-logo{font-weight:600;font-size:1.1em}
.mlops-offline-note{color:#6c757d;font-style:italic}
footer{position:static!important}
"""

# font-awesome icon class -> (text, meaning) shown instead of the glyph the icon font would draw
_ICONS = {
    "fa-check-circle": ("\u2714", "passed"),
    "fa-check": ("\u2714", "passed"),
    "fa-times": ("\u2718", "failed"),
    "fa-times-circle": ("\u2718", "failed"),
    "fa-exclamation-triangle": ("\u26a0", "warning"),
}
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)  # http(s)://, ftp://, //host (not data:)
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.I | re.S)
_CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*['"]?([^'");\s]+)[^;]*;""", re.I)
# tags whose only job is to fetch something: removed when that something is on another host
_FETCHING = {"link", "iframe", "embed", "object", "source", "track", "audio", "video", "frame"}
_ASSET_ATTRS = ("src", "srcset", "data", "poster", "background")


def is_external(url: str | None) -> bool:
    """True for a URL that names another host (``https://…``, ``//cdn…``); relative and ``data:`` are local."""
    return bool(url and _EXTERNAL.match(url))


def _soup(html: str) -> Any:
    from bs4 import BeautifulSoup

    return BeautifulSoup(html, "html.parser")


# ------------------------------------------------------------------------------------ public API


def external_references(html: str) -> list[str]:
    """Every URL on another host that opening ``html`` would fetch (scripts, stylesheets, images,
    frames, media, CSS ``url()``/``@import``). Empty for a self-contained page. Links (``<a href>``) and
    form targets are not fetched on view and are not listed."""
    found: list[str] = []
    for tag in _soup(html).find_all(True):
        urls = _asset_urls(tag) + _css_urls(tag.get("style") or "")
        if tag.name == "style":
            urls += _css_urls(tag.get_text())
        found += [u for u in urls if is_external(u)]
    return list(dict.fromkeys(found))


def make_self_contained(html: str) -> str:
    """``html`` with nothing left to fetch from another host and its tables rendered server-side."""
    soup = _soup(html)
    if soup.find("style", id=MARKER_ID) is not None:
        return html
    _render_bootstrap_tables(soup)
    charts = _vega_targets(soup)
    for tag in soup.find_all("script"):
        tag.decompose()
    for chart_id in charts:
        target = soup.find(id=chart_id)
        if target is not None:
            note = soup.new_tag("p", attrs={"class": "mlops-offline-note"})
            note.string = (
                "Chart not shown: it is drawn by JavaScript libraries this offline page does not load."
            )
            target.append(note)
    _drop_external_assets(soup)
    _drop_script_only_widgets(soup)
    _icons_as_text(soup)
    _add_stylesheet(soup)
    return str(soup)


def make_site_self_contained(folder: str | Path) -> list[Path]:
    """Apply :func:`make_self_contained` to every ``*.html`` under ``folder``; returns the pages changed."""
    changed = []
    for page in sorted(Path(folder).rglob("*.html")):
        before = page.read_text(encoding="utf-8")
        after = make_self_contained(before)
        if after != before:
            page.write_text(after, encoding="utf-8")
            changed.append(page)
    return changed


# ------------------------------------------------------------------------------------ assets


def _attr_urls(tag: Any, attr: str) -> list[str]:
    value = tag.get(attr)
    if not isinstance(value, str):
        return []
    if attr == "srcset":  # "a.png 1x, https://x/b.png 2x": every candidate
        return [part.split()[0] for part in value.split(",") if part.split()]
    return [value]


def _asset_urls(tag: Any) -> list[str]:
    """URLs the tag itself makes the browser fetch (``href`` only for ``<link>``)."""
    attrs = (*_ASSET_ATTRS, "href") if tag.name == "link" else _ASSET_ATTRS
    return [u for a in attrs for u in _attr_urls(tag, a)]


def _css_urls(css: str) -> list[str]:
    return [m.group(2).strip() for m in _CSS_URL.finditer(css)] + [
        m.group(1) for m in _CSS_IMPORT.finditer(css)
    ]


def _local_css(css: str) -> str:
    """``css`` without ``@import`` of, or ``url()`` to, another host."""
    css = _CSS_IMPORT.sub(lambda m: "" if is_external(m.group(1)) else m.group(0), css)
    return _CSS_URL.sub(lambda m: "none" if is_external(m.group(2)) else m.group(0), css)


def _drop_external_assets(soup: Any) -> None:
    for tag in soup.find_all(True):
        if tag.decomposed:
            continue
        external = any(is_external(u) for u in _asset_urls(tag))
        if tag.name in _FETCHING and external:
            tag.decompose()
            continue
        if tag.name == "img" and external:
            alt = tag.get("alt") or ""
            if alt:
                label = soup.new_tag("span", attrs={"class": "mlops-logo"})
                label.string = alt
                tag.replace_with(label)
            else:
                tag.decompose()
            continue
        if external:  # any other tag: drop the attributes that would fetch
            for attr in _ASSET_ATTRS:
                if any(is_external(u) for u in _attr_urls(tag, attr)):
                    del tag[attr]
        if tag.get("style"):
            tag["style"] = _local_css(tag["style"])
    for style in soup.find_all("style"):
        text = style.get_text()
        local = _local_css(text)
        if local != text:
            style.string = local


def _drop_script_only_widgets(soup: Any) -> None:
    """Inline handlers call code that is gone: drop them, the controls carrying them (filter buttons,
    "Clear Filters"), and a card left with nothing but its title and labels."""
    cards = []
    for tag in soup.find_all(True):
        if tag.decomposed:
            continue
        handlers = [a for a in tag.attrs if a.lower().startswith("on")]
        if not handlers:
            continue
        card = tag.find_parent(class_="card")
        if card is not None:
            cards.append(card)
        group = tag.find_parent(class_=re.compile(r"\bbtn-group\b"))
        if tag.name in ("button", "label", "input") or group is not None:
            (group or tag).decompose()
        else:
            for a in handlers:
                del tag[a]
    for card in cards:
        if not card.decomposed and card.find(["a", "table", "ul", "ol", "img", "svg", "pre"]) is None:
            card.decompose()


def _icons_as_text(soup: Any) -> None:
    for tag in soup.find_all("i", class_=True):
        for cls in tag.get("class", []):
            if cls in _ICONS:
                text, meaning = _ICONS[cls]
                tag.string = text
                tag["title"] = meaning
                tag["class"] = [*tag["class"], "mlops-icon"]
                break


def _add_stylesheet(soup: Any) -> None:
    style = soup.new_tag("style", attrs={"id": MARKER_ID})
    style.string = OFFLINE_CSS
    head = soup.head
    if head is None:
        head = soup.new_tag("head")
        (soup.html or soup).insert(0, head)
    head.append(style)


def _vega_targets(soup: Any) -> list[str]:
    ids = []
    for script in soup.find_all("script"):
        ids += re.findall(r"""vegaEmbed\(\s*['"]#([\w:.-]+)['"]""", script.get_text())
    return ids


# ------------------------------------------------------------------------------------ tables


def _literal_at(text: str, start: int) -> tuple[Any, int]:
    """The Python literal (list/dict) starting at ``text[start]`` and the offset just after it.

    GX writes the table's columns, rows and options into its JavaScript with Jinja as Python reprs;
    Python's own tokenizer finds where the literal ends (brackets inside strings are not counted) and
    ``ast.literal_eval`` reads it (never evaluates code). Raises ValueError when there is none.
    """
    src = text[start:]
    lines = io.StringIO(src).readlines()
    depth = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type != tokenize.OP:
                if depth == 0 and tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                    break
                continue
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
                if depth == 0:
                    row, col = tok.end
                    end = sum(len(line) for line in lines[: row - 1]) + col
                    return ast.literal_eval(src[:end]), start + end
            elif depth == 0:
                break
    except (tokenize.TokenError, SyntaxError, ValueError) as exc:
        raise ValueError(f"no Python literal at offset {start}: {exc}") from exc
    raise ValueError(f"no Python literal at offset {start}")


def _table_spec(script: str, table_id: str) -> tuple[list[dict], list[dict], dict] | None:
    """(columns, rows, options) of the bootstrap-table ``table_id`` initialised in ``script``."""
    call = re.search(
        r"""\$\(\s*['"]#""" + re.escape(table_id) + r"""['"]\s*\)\s*\.bootstrapTable\(""", script
    )
    if call is None:
        return None
    try:
        cols = re.compile(r"\bcolumns\s*:\s*").search(script, call.end())
        data = re.compile(r"\bdata\s*:\s*").search(script, call.end())
        if cols is None or data is None:
            return None
        columns, _ = _literal_at(script, cols.end())
        rows, end = _literal_at(script, data.end())
        options: dict = {}
        second = re.compile(r"\}\s*,\s*(\{)").search(script, end)
        if second is not None:
            options, _ = _literal_at(script, second.start(1))
    except ValueError:
        return None
    if not isinstance(columns, list) or not isinstance(rows, list):
        return None
    return columns, rows, options if isinstance(options, dict) else {}


def _sorted_rows(columns: list[dict], rows: list[dict], options: dict) -> list[dict]:
    name = options.get("sortName")
    if not name:
        return rows
    col = next((c for c in columns if c.get("field") == name), {})
    key = col.get("sortName") or name
    try:
        return sorted(
            rows,
            key=lambda r: (r.get(key) is None, r.get(key)),
            reverse=str(options.get("sortOrder", "asc")).lower() == "desc",
        )
    except TypeError:
        return rows


def _render_bootstrap_tables(soup: Any) -> None:
    """Fill every empty ``<table data-toggle="table">`` from the data GX embeds for bootstrap-table."""
    scripts = [s.get_text() for s in soup.find_all("script")]
    for table in soup.find_all("table", attrs={"data-toggle": "table"}):
        table_id = table.get("id")
        if table.find("tr") is not None:  # already rendered by GX: bootstrap-table only restyled it
            del table["data-toggle"]
            continue
        spec = next(
            (s for s in (_table_spec(text, table_id) for text in scripts if table_id) if s is not None), None
        )
        if spec is None:
            note = soup.new_tag("p", attrs={"class": "mlops-offline-note"})
            note.string = "This table could not be rendered without JavaScript."
            table.insert_before(note)
            continue
        columns, rows, options = spec
        del table["data-toggle"]
        table.clear()
        thead, tbody = soup.new_tag("thead"), soup.new_tag("tbody")
        head_row = soup.new_tag("tr")
        for col in columns:
            th = soup.new_tag("th")
            th.string = str(col.get("title", col.get("field", "")))
            head_row.append(th)
        thead.append(head_row)
        for row in _sorted_rows(columns, rows, options):
            tr = soup.new_tag("tr")
            link = row.get("_table_row_link_path")
            linked = False
            for col in columns:
                field = col.get("field", "")
                td = soup.new_tag("td")
                text = row.get(f"_{field}_text")  # e.g. _validation_success_text: "Success"/"Failed"
                if text is not None:
                    td.string = str(text)
                    td["class"] = ["mlops-success" if str(text).lower() == "success" else "mlops-failed"]
                else:
                    for node in list(_soup(str(row.get(field, ""))).contents):
                        td.append(node)
                if link and not linked and td.find("a") is None:
                    anchor = soup.new_tag("a", attrs={"href": link})
                    for node in list(td.contents):
                        anchor.append(node.extract())
                    td.append(anchor)
                    linked = True
                tr.append(td)
            tbody.append(tr)
        table.append(thead)
        table.append(tbody)
        toolbar = soup.find(id=f"{table_id}-toolbar")
        if toolbar is not None:
            toolbar.decompose()
