"""Self-contained report pages: external assets removed, bootstrap-tables rendered server-side."""

from __future__ import annotations

from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from mlops.config.model import BUILTIN_MODELS_DIR, get_model_config
from mlops.data.report_html import (
    MARKER_ID,
    external_references,
    is_external,
    make_self_contained,
    make_site_self_contained,
)
from mlops.data.validation import validate_batch
from mlops.demo.datagen import generate_churn

# The shape of a GX 1.x index page (trimmed): CDN assets, an empty table filled by bootstrap-table
# from Python reprs written into the script, a "Clear Filters" toolbar, an "Actions" card of buttons.
GX_LIKE = """<!DOCTYPE html>
<html><head><title>Data Docs</title>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<link rel="shortcut icon" href="./static/images/favicon.ico" type="image/x-icon"/>
<style>.ge-section{clear:both}
@import url("https://fonts.example.com/f.css");
.navbar-brand a{background:url('https://assets.example.com/logo.png') 0 0 no-repeat}
.local{background:url(./static/images/x.png)}</style>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script src="//unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js"></script>
</head><body>
<img src="https://assets.example.com/logo-long.png?d=1" alt="Great Expectations"/>
<div class="card"><div class="card-header"><strong>Actions</strong></div><div class="card-body">
<p>Validation Filter:</p><div class="btn-group"><label onclick="showAll()">Show All</label></div></div></div>
<div id="t-toolbar"><button onclick="clearTableFilters('t')">Clear Filters</button></div>
<table id="t" class="ge-index-page-validation-results-table" data-toggle="table"></table>
<table id="done" data-toggle="table"><tr><td>already rendered</td></tr></table>
<div id="chart-1"></div>
<script>
  $('#t').bootstrapTable(
    Object.assign(
      {
        columns: [{'field': 'validation_success', 'title': 'Status'}, {'field': 'run_name', 'title': 'Run Name'},
                  {'field': 'run_time', 'title': 'Run Time', 'sortName': '_run_time_sort'},
                  {'field': 'expectation_suite_name', 'title': 'Expectation Suite'}],
        data: [{'validation_success': '<i class="fas fa-times text-danger"></i>', 'run_name': 'old [1].csv',
                'run_time': '2026-01-01', '_run_time_sort': 1.0, '_validation_success_text': 'Failed',
                'expectation_suite_name': '<a href="expectations/s.html">churn_batch</a>',
                '_table_row_link_path': 'validations/old.html'},
               {'validation_success': '<i class="fas fa-check-circle text-success"></i>',
                'run_name': 'new}{.csv', 'run_time': '2026-02-01', '_run_time_sort': 2.0,
                '_validation_success_text': 'Success',
                'expectation_suite_name': '<a href="expectations/s.html">churn_batch</a>',
                '_table_row_link_path': 'validations/new.html'}],
        toolbar: '#t-toolbar'
      },
      {'search': 'true', 'sortName': 'run_time', 'sortOrder': 'desc'}
    )
  );
  vegaEmbed('#chart-1', {}, {});
</script>
<p id="status">Status: <i class="fas fa-check-circle text-success" aria-hidden="true"></i> Succeeded</p>
<a href="https://greatexpectations.io">Great Expectations</a>
</body></html>"""


def _rows(soup: BeautifulSoup, table_id: str) -> list[list[str]]:
    return [
        [td.get_text(strip=True) for td in tr.find_all("td")] for tr in soup.find(id=table_id).tbody("tr")
    ]


def test_gx_like_page_becomes_self_contained_and_readable():
    assert len(external_references(GX_LIKE)) == 6
    out = make_self_contained(GX_LIKE)
    soup = BeautifulSoup(out, "html.parser")

    assert external_references(out) == []
    assert soup.find("script") is None and "onclick" not in out
    assert soup.find("link", rel="shortcut icon") is not None  # same-origin assets stay
    assert "url(./static/images/x.png)" in out and ".ge-section{clear:both}" in out  # GX's own CSS stays
    assert soup.find(id=MARKER_ID) is not None
    # the table: GX's order (run_time desc), status as text linking to the page, brackets in strings intact
    assert [th.get_text() for th in soup.find(id="t").thead("th")] == [
        "Status",
        "Run Name",
        "Run Time",
        "Expectation Suite",
    ]
    assert _rows(soup, "t") == [
        ["Success", "new}{.csv", "2026-02-01", "churn_batch"],
        ["Failed", "old [1].csv", "2026-01-01", "churn_batch"],
    ]
    status = soup.find(id="t").tbody.tr.td
    assert status["class"] == ["mlops-success"] and status.a["href"] == "validations/new.html"
    assert soup.find(id="t").get("data-toggle") is None
    assert soup.find(id="done").get_text(strip=True) == "already rendered"
    assert soup.find(id="t-toolbar") is None  # "Clear Filters" needs the removed JS
    assert "Actions" not in soup.get_text()  # a card of JS-only buttons is dropped
    assert soup.find("span", class_="mlops-logo").get_text() == "Great Expectations"  # external logo -> alt
    assert "JavaScript" in soup.find(id="chart-1").get_text()  # a vega chart says why it is missing
    icon = soup.find(id="status").i
    assert icon.get_text() == "\u2714" and icon["title"] == "passed"
    assert soup.find("a", href="https://greatexpectations.io") is not None  # links are not fetched
    assert make_self_contained(out) == out  # idempotent


def test_unparsable_table_data_leaves_a_note_not_a_crash():
    page = (
        '<html><head></head><body><table id="x" data-toggle="table"></table>'
        "<script>$('#x').bootstrapTable({columns: [{'field': 'a'}], data: [{'a': oops(]});</script></body></html>"
    )
    out = make_self_contained(page)
    assert "could not be rendered without JavaScript" in out and "<script" not in out


@pytest.mark.parametrize(
    ("url", "external"),
    [
        ("https://cdn.example.com/x.js", True),
        ("http://cdn.example.com/x.js", True),
        ("//cdn.example.com/x.js", True),
        ("./static/x.css", False),
        ("static/x.css", False),
        ("/mlops/reports/x.css", False),
        ("data:image/png;base64,AAAA", False),
        ("#section-1", False),
        (None, False),
    ],
)
def test_is_external(url, external):
    assert is_external(url) is external


def test_external_references_finds_every_kind_of_fetch():
    page = (
        '<html><head><style>@import "https://a.example/i.css"; b{background:url(//b.example/b.png)}</style>'
        '<link rel="preload" href="https://c.example/f.woff2"></head><body>'
        '<img srcset="local.png 1x, https://d.example/2x.png 2x"><iframe src="https://e.example/"></iframe>'
        '<video poster="./p.png"><source srcset="v.webm, https://h.example/v.mp4"></video>'
        '<div style="background-image:url(&quot;https://f.example/bg.png&quot;)"></div>'
        '<a href="https://g.example/">a link is not a fetch</a><img src="data:image/gif;base64,R0lGOD"></body></html>'
    )
    assert sorted(external_references(page)) == [
        "//b.example/b.png",
        "https://a.example/i.css",
        "https://c.example/f.woff2",
        "https://d.example/2x.png",
        "https://e.example/",
        "https://f.example/bg.png",
        "https://h.example/v.mp4",
    ]
    out = make_self_contained(page)
    assert external_references(out) == []
    assert 'href="https://g.example/"' in out and "local.png" not in out  # the img went with its srcset
    assert 'poster="./p.png"' in out and "<source" not in out


def test_real_data_docs_are_self_contained(tmp_path):
    """The pages validate_batch builds: no script, nothing external, the index table filled."""
    cfg = get_model_config("churn", BUILTIN_MODELS_DIR)
    df = generate_churn(400, seed=5)
    df.loc[:4, "region"] = "atlantis"
    df.to_csv(tmp_path / "batch-7.csv", index=False)
    report = validate_batch(tmp_path / "batch-7.csv", cfg, docs_dir=tmp_path / "docs")
    pages = sorted((tmp_path / "docs").rglob("*.html"))
    assert len(pages) == 3
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert external_references(html) == [], page
        assert "<script" not in html and "https://cdn" not in html, page
    index = BeautifulSoup(Path(report.docs_path).read_text(encoding="utf-8"), "html.parser")
    rows = index.select("table.ge-index-page-validation-results-table tbody tr")
    assert len(rows) == 1
    cells = [td.get_text(" ", strip=True) for td in rows[0]("td")]
    assert cells[0] == "Failed" and "batch-7.csv" in cells and "churn_batch" in cells
    target = tmp_path / "docs" / rows[0].td.a["href"]
    assert target.is_file() and "atlantis" in target.read_text(encoding="utf-8")
    assert make_site_self_contained(tmp_path / "docs") == []  # already done: nothing changes
