"""``advgrid report``: a study as one self-contained HTML page.

The page loads nothing: figures are inline SVG, example images PNG ``data:`` URIs, the CSS
sits in the page, and a Content-Security-Policy forbids every other source, so it reads the
same from an e-mail attachment as from the machine that made it. The page is a jinja2
template (``templates/report.html``) rendered with autoescaping: every name, error and the
study file are escaped; only the SVG that matplotlib writes (which escapes its own text) is
inserted as markup.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import matplotlib
from markupsafe import Markup

from orchestrator.errors import AdvgridError
from orchestrator.report.data import STATES, ExampleSet, Report, Sample
from orchestrator.report.joins import JoinSummary
from orchestrator.views import plots
from orchestrator.views.transfer import DENOMINATOR_TEXT, Entry, Matrix

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MAX_SIDE = 128  # larger example images are shrunk to this many pixels on their long side
MIN_SHOWN = 72  # smaller ones are shown enlarged (pixelated) to at least this many
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def check_output(path: Path) -> None:
    """Refuse an output path whose folder does not exist (before any work is done).

    Raises:
        AdvgridError: The folder is missing.
    """
    if not path.parent.is_dir():
        raise AdvgridError(
            f"-o {path}: no such folder {path.parent}; create it first or write elsewhere"
        )


def write(report: Report, path: Path) -> int:
    """Render ``report`` to ``path`` (written whole or not at all); returns its size in bytes.

    Raises:
        AdvgridError: The folder is missing or the file cannot be written.
    """
    check_output(path)
    data = render(report).encode()
    # a temporary name beside it (opened normally, so the umask applies), then a rename
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AdvgridError(f"-o {path}: cannot write the report: {exc.strerror}") from exc
    return len(data)


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("orchestrator.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(report: Report) -> str:
    """The page of ``report`` as HTML text."""
    template = _environment().get_template("report.html")
    return template.render(
        r=report,
        csp=CSP,
        states=STATES,
        denominator_text=DENOMINATOR_TEXT[report.denominator],
        matrices=[matrix_view(m) for m in report.matrices],
        curve_tables=[
            {"table": t, "figures": [figure_svg(f) for f in plots.curve_figures(t.curves)]}
            for t in report.curve_tables
        ],
        examples=[example_view(s) for s in report.examples],
        joins=[join_view(j) for j in report.joins.summaries],
    )


def figure_svg(fig: Figure) -> Markup:
    """``fig`` as inline SVG with its text as text (smaller, selectable) and no metadata."""
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        text = plots.svg_text(fig)
    # markup as is: matplotlib escapes every text it writes into the SVG
    return Markup(_SVG_METADATA.sub("", text))


def matrix_view(m: Matrix) -> dict[str, Any]:
    """A transfer matrix as the template lays it out: one row per source."""
    return {
        "title": m.title(),
        "caption": m.caption(),
        "targets": m.targets,
        "rows": [
            (source, [_entry_view(e) for e in row])
            for source, row in zip(m.sources, m.entries, strict=True)
        ],
        "heatmap": figure_svg(plots.heatmap(m)),
    }


def _entry_view(e: Entry | None) -> dict[str, Any]:
    if e is None or e.rate is None or e.ci is None:
        return {"empty": "—" if e is None else "n=0"}
    lo, hi = e.ci
    # a light-to-dark blue by rate, so the table reads like its heatmap
    lightness = 96 - 50 * e.rate
    return {
        "rate": f"{e.rate * 100:.1f}%",
        "ci": f"[{lo * 100:.1f}, {hi * 100:.1f}]",
        "n": e.n,
        "fooled": e.fooled,
        "style": f"background-color: hsl(212, 60%, {lightness:.0f}%)",
        "dark": lightness < 62,
    }


def example_view(s: ExampleSet) -> dict[str, Any]:
    """One attack cell's examples: per sample three PNG data URIs and their labels."""
    return {
        "title": s.title,
        "key": s.cell_key,
        "note": s.note,
        "successes": s.successes,
        "total": s.total,
        "defended": s.defended,
        "targets": any(x.target_image is not None for x in s.samples),
        "samples": [_sample_view(x) for x in s.samples],
    }


def _sample_view(s: Sample) -> dict[str, Any]:
    delta = s.adv - s.clean
    peak = float(delta.abs().max())
    shown = 0.5 + delta / (2 * peak) if peak > 0 else delta + 0.5
    width, height = display_size(*s.clean.shape[-2:])
    return {
        "clean": png_uri(s.clean),
        "adv": png_uri(s.adv),
        "delta": png_uri(shown),
        "width": width,
        "height": height,
        "gain": f"×{0.5 / peak:.0f}" if peak > 0 else "none",
        "linf": f"{peak:.3g}",
        "sample": s,
        "defended_clean": None if s.defended_clean is None else png_uri(s.defended_clean),
        "defended_adv": None if s.defended_adv is None else png_uri(s.defended_adv),
        "target_image": None if s.target_image is None else png_uri(s.target_image),
    }


def display_size(height: int, width: int) -> tuple[int, int]:
    """``(width, height)`` in CSS pixels of an image as :func:`png_uri` stores it: shrunk to
    :data:`MAX_SIDE`, or enlarged by a whole factor to at least :data:`MIN_SHOWN`."""
    side = max(height, width)
    if side > MAX_SIDE:
        return round(width * MAX_SIDE / side), round(height * MAX_SIDE / side)
    scale = max(1, math.ceil(MIN_SHOWN / side))
    return width * scale, height * scale


def join_view(j: JoinSummary) -> dict[str, Any]:
    """A per-sample join with its fool-every-target examples as images."""
    images = []
    for f in j.images:
        width, height = display_size(int(f.x_adv.shape[-2]), int(f.x_adv.shape[-1]))
        images.append({"f": f, "uri": png_uri(f.x_adv), "width": width, "height": height})
    share = f"{j.fool_all / j.n * 100:.1f}%" if j.n else "—"
    return {"j": j, "share": share, "images": images}


def png_uri(x: torch.Tensor) -> str:
    """A ``(C, H, W)`` image in [0, 1] as a PNG data URI: grey for one channel, RGB for three,
    the channel mean otherwise; shrunk to :data:`MAX_SIDE` on its long side."""
    from PIL import Image

    x = x.detach().float().clamp(0, 1)
    if x.shape[0] != 3:
        x = x.mean(0, keepdim=True)
    pixels = (x * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
