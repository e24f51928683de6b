"""A report as data (sections of tiles, charts, tables and notes) and its one-file HTML page.

The page inlines everything it needs: the stylesheet, the Vega / Vega-Lite / vega-embed
bundle that ``vl-convert-python`` ships (:func:`javascript_bundle`), the chart specs and their
data as one JSON block, and a small boot script that draws each chart with vega-embed (SVG
renderer, no action menu), keeps the views in ``window.squallViews`` and sets
``data-rendered`` on ``<html>`` once every chart is drawn (``data-render-error`` if one
failed). Nothing is fetched: no CDN, no font, no data URL.

Data sets are stored once, column-wise (``{"t": [...], "equity": [...]}``), and turned into
rows in the browser; several charts may share one. Every number in a table is written with
its exact value in ``data-value`` (shortest round-trip float) beside the formatted text.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

VEGA_LITE_VERSION = "6.4"
GLOBALS = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"


# ----------------------------------------------------------------------------- formatting
def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool | str):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _minus(text: str) -> str:
    return text.replace("-", "\u2212")


def pct(value: Any, digits: int = 2) -> str:
    """A fraction as a percentage (``-0.1234`` -> ``−12.34%``); ``—`` when undefined."""
    v = _finite(value)
    return "—" if v is None else _minus(f"{v * 100:.{digits}f}%")


def num(value: Any, digits: int = 2) -> str:
    """A number with thousands separators; ``—`` when undefined."""
    v = _finite(value)
    return "—" if v is None else _minus(f"{v:,.{digits}f}")


def integer(value: Any) -> str:
    v = _finite(value)
    return "—" if v is None else _minus(f"{round(v):,d}")


def text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return num(value, 4)
    return str(value)


def utc(ts: Any, *, time: bool = True) -> str:
    """Unix seconds as ISO-8601 UTC (``2024-03-01 12:00 UTC``)."""
    v = _finite(ts)
    if v is None:
        return "—"
    stamp = np.datetime64(int(v), "s").astype(str)  # 2024-03-01T12:00:00
    return f"{stamp[:10]} {stamp[11:16]} UTC" if time else stamp[:10]


Formatter = Callable[[Any], str]


# ---------------------------------------------------------------------------- the blocks
@dataclass(frozen=True)
class Cell:
    """A table cell: its text, and the exact number behind it when it shows one."""

    text: str
    value: float | int | None = None
    key: str | None = None
    css: str = ""


def cell(value: Any, fmt: Formatter = text, key: str | None = None, css: str = "") -> Cell:
    raw = _finite(value)
    exact: float | int | None = None
    if raw is not None:
        exact = int(value) if isinstance(value, int | np.integer) else float(value)
    return Cell(fmt(value), exact, key, css)


@dataclass(frozen=True)
class Table:
    id: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    numeric_from: int = 1  # columns from this one on are right-aligned
    wide: bool = False  # the full width of the section (else as wide as its content)


@dataclass(frozen=True)
class Tile:
    label: str
    cell: Cell
    hint: str = ""


@dataclass(frozen=True)
class Tiles:
    tiles: Sequence[Tile]


@dataclass(frozen=True)
class Chart:
    """A chart placeholder: ``name`` keys its spec in :class:`Report`."""

    name: str
    caption: str = ""
    wide: bool = True


@dataclass(frozen=True)
class Note:
    text: str
    warn: bool = False


Block = Table | Tiles | Chart | Note


@dataclass(frozen=True)
class Section:
    title: str
    blocks: Sequence[Block]
    id: str = ""


@dataclass
class Report:
    """Everything a page shows; ``specs`` name the data sets they draw in ``uses``."""

    kind: str
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    uses: dict[str, list[str]] = field(default_factory=dict)
    datasets: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    meta: list[tuple[str, str]] = field(default_factory=list)

    def add_chart(self, name: str, spec: dict[str, Any], uses: Sequence[str]) -> None:
        missing = [d for d in uses if d not in self.datasets]
        if missing:
            raise KeyError(f"chart {name!r} uses unknown data sets {missing}")
        self.specs[name] = spec
        self.uses[name] = list(uses)

    @property
    def charts(self) -> list[str]:
        return list(self.specs)

    def standalone_spec(self, name: str, width: int = 860) -> dict[str, Any]:
        """The spec of chart ``name`` with its data inline as rows and a fixed width (for
        PNG/SVG export, where there is no container to fit)."""
        if name not in self.specs:
            raise KeyError(f"no chart {name!r} in this {self.kind} report; charts: {self.charts}")
        spec = orjson.loads(orjson.dumps(self.specs[name]))
        _fix_width(spec, width)
        spec["datasets"] = {d: rows(self.datasets[d]) for d in self.uses[name]}
        return spec

    def html(self) -> str:
        return render_page(self)


def _fix_width(spec: dict[str, Any], width: int) -> None:
    if spec.get("width") == "container":
        spec["width"] = width
    for key in ("vconcat", "layer"):
        for sub in spec.get(key, []):
            _fix_width(sub, width)
    if "spec" in spec:
        _fix_width(spec["spec"], width)


def rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Column-wise data as Vega rows."""
    keys = list(columns)
    n = len(columns[keys[0]]) if keys else 0
    return [{k: columns[k][i] for k in keys} for i in range(n)]


def column(values: Any) -> list[Any]:
    """An array as a JSON column (NaN and inf -> null)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return [int(v) for v in arr.tolist()]
    if arr.dtype.kind == "f":
        out = arr.astype(np.float64)
        return [v if math.isfinite(v) else None for v in out.tolist()]
    return [None if v is None else v for v in arr.tolist()]


# -------------------------------------------------------------------------------- assets
@functools.cache
def javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script (from ``vl-convert-python``, offline),
    wrapped in a function so its top-level names do not leak into the page."""
    import vl_convert

    return "(function(){" + vl_convert.javascript_bundle(GLOBALS, VEGA_LITE_VERSION) + "\n})();"


CSS = """
:root{--fg:#1d2433;--muted:#5b6474;--line:#dfe3ea;--bg:#f6f7f9;--card:#fff;--bad:#b42318;
--good:#067647;--warn:#b54708;font-family:"DejaVu Sans","Liberation Sans",Arial,sans-serif}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font-size:14px}
header{background:#16213a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1e2}main{max-width:1120px;margin:0 auto;padding:12px 20px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:16px 0;
padding:14px 18px}section h2{font-size:16px;margin:0 0 10px}
.meta{display:flex;flex-wrap:wrap;gap:6px 18px;color:var(--muted);font-size:12px;margin:8px 0}
.meta b{color:var(--fg);font-weight:600}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.tile{border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.tile .label{color:var(--muted);font-size:12px}.tile .value{font-size:20px;font-weight:600}
.tile .hint{color:var(--muted);font-size:11px}
.chart{width:100%;min-height:60px;margin:6px 0}.chart-caption{color:var(--muted);font-size:12px;
margin:2px 0 12px}table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
table{width:auto;min-width:420px}table.wide{width:100%}
caption{text-align:left;color:var(--muted);font-size:12px;padding:4px 0}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{background:#f0f2f6;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:
tabular-nums}td.neg{color:var(--bad)}td.pos{color:var(--good)}td.flag{color:var(--warn);
font-weight:600}.table-wrap{overflow-x:auto}.note{color:var(--muted);font-size:12px;margin:6px 0}
.note.warn{color:var(--warn)}.render-error{color:var(--bad);font-weight:600}
footer{color:var(--muted);font-size:11px;text-align:center;padding:10px}
"""

BOOT = """
(function(){
  const t0 = performance.now();
  const payload = JSON.parse(document.getElementById('squall-report').textContent);
  const cache = {};
  function rows(name){
    if (cache[name]) return cache[name];
    const cols = payload.datasets[name], keys = Object.keys(cols);
    const n = keys.length ? cols[keys[0]].length : 0, out = new Array(n);
    for (let i = 0; i < n; i++){
      const o = {}; for (const k of keys) o[k] = cols[k][i]; out[i] = o;
    }
    return (cache[name] = out);
  }
  window.squallViews = {};
  const root = document.documentElement;
  const jobs = Array.from(document.querySelectorAll('[data-chart]')).map(function(el){
    const name = el.dataset.chart, spec = payload.specs[name], datasets = {};
    for (const d of payload.uses[name]) datasets[d] = rows(d);
    spec.datasets = datasets;
    return vegaEmbed(el, spec, {actions: false, renderer: 'svg'}).then(function(res){
      window.squallViews[name] = res.view; el.dataset.rendered = 'true';
    }).catch(function(err){
      el.dataset.renderError = String(err);
      el.innerHTML = '<p class="render-error">chart ' + name + ' failed: ' + String(err) + '</p>';
      throw err;
    });
  });
  Promise.allSettled(jobs).then(function(results){
    root.dataset.renderMs = String(Math.round(performance.now() - t0));
    root.dataset.renderTotalMs = String(Math.round(performance.now()));
    const bad = results.filter(function(r){ return r.status === 'rejected'; });
    if (bad.length) root.dataset.renderError = String(bad[0].reason);
    root.dataset.rendered = bad.length ? 'error' : 'true';
  });
})();
"""


# ---------------------------------------------------------------------------------- html
def _e(value: str) -> str:
    return html.escape(value, quote=True)


def _json_script(value: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` escaped as ``\\u`` codes."""
    raw = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _cell_html(c: Cell, tag: str, numeric: bool) -> str:
    classes = [x for x in (("num" if numeric else ""), c.css) if x]
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    if c.key is not None:
        attrs += f' data-key="{_e(c.key)}"'
    if c.value is not None:
        attrs += f' data-value="{_e(repr(c.value))}"'
    return f"<{tag}{attrs}>{_e(c.text)}</{tag}>"


def _table_html(t: Table) -> str:
    head = "".join(
        f'<th class="{"num" if i >= t.numeric_from else ""}">{_e(c)}</th>'
        for i, c in enumerate(t.columns)
    )
    body = "".join(
        "<tr>"
        + "".join(_cell_html(c, "td", i >= t.numeric_from) for i, c in enumerate(row))
        + "</tr>"
        for row in t.rows
    )
    caption = f"<caption>{_e(t.caption)}</caption>" if t.caption else ""
    wide = ' class="wide"' if t.wide else ""
    return (
        f'<div class="table-wrap"><table id="{_e(t.id)}"{wide}>{caption}<thead><tr>{head}</tr>'
        f"</thead><tbody>{body}</tbody></table></div>"
    )


def _block_html(b: Block) -> str:
    if isinstance(b, Table):
        return _table_html(b)
    if isinstance(b, Tiles):
        items = "".join(
            '<div class="tile"><div class="label">'
            + _e(t.label)
            + "</div>"
            + _cell_html(Cell(t.cell.text, t.cell.value, t.cell.key, "value"), "div", False)
            + (f'<div class="hint">{_e(t.hint)}</div>' if t.hint else "")
            + "</div>"
            for t in b.tiles
        )
        return f'<div class="tiles">{items}</div>'
    if isinstance(b, Chart):
        caption = f'<p class="chart-caption">{_e(b.caption)}</p>' if b.caption else ""
        return f'<div class="chart" id="chart-{_e(b.name)}" data-chart="{_e(b.name)}"></div>' + (
            caption
        )
    return f'<p class="note{" warn" if b.warn else ""}">{_e(b.text)}</p>'


def render_page(report: Report) -> str:
    """The report as one self-contained HTML document."""
    drawn = {b.name for s in report.sections for b in s.blocks if isinstance(b, Chart)}
    unknown = drawn - set(report.specs)
    if unknown:
        raise KeyError(f"sections place charts without a spec: {sorted(unknown)}")
    payload = {
        "specs": {k: v for k, v in report.specs.items() if k in drawn},
        "uses": {k: v for k, v in report.uses.items() if k in drawn},
        "datasets": {
            d: report.datasets[d] for d in sorted({u for k in drawn for u in report.uses[k]})
        },
    }
    meta = "".join(f"<span>{_e(k)}: <b>{_e(v)}</b></span>" for k, v in report.meta)
    sections = "".join(
        f'<section id="{_e(s.id or s.title.lower().replace(" ", "-"))}"><h2>{_e(s.title)}</h2>'
        + "".join(_block_html(b) for b in s.blocks)
        + "</section>"
        for s in report.sections
    )
    return (
        '<!doctype html><html lang="en" data-report="'
        + _e(report.kind)
        + '"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(report.title)}</title><style>{CSS}</style>"
        f"<script>{javascript_bundle()}</script></head><body>"
        f"<header><h1>{_e(report.title)}</h1><p>{_e(report.subtitle)}</p></header>"
        f'<main><div class="meta">{meta}</div>{sections}</main>'
        "<footer>squall report: self-contained, charts drawn with Vega-Lite from the data "
        "embedded in this file.</footer>"
        f'<script type="application/json" id="squall-report">{_json_script(payload)}</script>'
        f"<script>{BOOT}</script></body></html>"
    )
