"""Charts as PNG or SVG for embedding, rendered without a browser by ``vl-convert-python``
(the same Vega-Lite version the pages inline), from the same specs and data as the pages."""

from __future__ import annotations

from serve_app.reports.page import VEGA_LITE_VERSION, Report

EXPORT_WIDTH = 860


def chart_svg(report: Report, name: str, *, width: int = EXPORT_WIDTH) -> str:
    """Chart ``name`` of ``report`` as a standalone SVG document."""
    import vl_convert

    spec = report.standalone_spec(name, width)
    return str(vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE_VERSION, allowed_base_urls=[]))


def chart_png(report: Report, name: str, *, width: int = EXPORT_WIDTH, scale: float = 2.0) -> bytes:
    """Chart ``name`` of ``report`` as PNG (``scale`` 2 for sharp text on high-DPI screens)."""
    import vl_convert

    spec = report.standalone_spec(name, width)
    return bytes(
        vl_convert.vegalite_to_png(
            spec, vl_version=VEGA_LITE_VERSION, scale=scale, allowed_base_urls=[]
        )
    )
