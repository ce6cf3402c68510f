"""How figures look: the rc :data:`STYLE`, the one table of method styles, and :func:`save`.

Every method has one label, one short run tag, one colour and one marker, declared once on its
pruner class (``pruners.method_style``) and looked up here with :func:`method_style`, which
also answers for names outside the table (grey, the name as label); figures never spell them out.

>>> method_style("gem-miner").color
'#009E73'
>>> tag("synflow", 42)
'syn_42'
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from pruners import MethodStyle, method_styles

#: rc settings of every figure: readable fonts (≥ 10 pt) and no top/right spines.
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "savefig.dpi": 150,
    "figure.dpi": 100,
    "pdf.fonttype": 42,
}
#: seeds are told apart by line style and marker in shades of grey, never by a method's colour
SEED_STYLES = {21: {"color": "#000000", "ls": "-", "marker": "o"},
               42: {"color": "#555555", "ls": "--", "marker": "s"},
               63: {"color": "#999999", "ls": ":", "marker": "^"}}
DENSITY_LABEL = "Density (% remaining)"
#: widest figure (inches): 10-pt text scaled to a 6.5-inch column stays ≥ 8 pt
MAX_WIDTH = 8.1
#: colour of a method without an entry in the table
FALLBACK_COLOR = "#444444"


# Panel titles are mapped back to methods by label prefix, first match wins: the plain methods
# come before their variants ("Gem-Miner" before "Gem-Miner weight-reinit").
_ORDER = ("gem-miner", "synflow", "random", "magnitude", "deepr", "soft-deepr", "dnw", "dense", "random-fc",
          "gem-miner-reinit", "gem-miner-shuffle")


def _method_styles() -> dict[str, MethodStyle]:
    """The pruners' style table (:func:`pruners.method_styles`), in :data:`_ORDER` first."""
    styles = method_styles()
    return {name: styles[name] for name in (*_ORDER, *sorted(set(styles) - set(_ORDER)))}


def method_style(name: str) -> MethodStyle:
    """The :class:`MethodStyle` of a pruner name; an unknown name is its own label and tag, in grey."""
    return _method_styles().get(name) or MethodStyle(name, name, FALLBACK_COLOR)


def styled_methods() -> list[str]:
    """Every method with a style, in table order."""
    return list(_method_styles())


def method_of_label(label: str) -> str:
    """The method whose label starts ``label`` (``"Gem-Miner (flags)"`` → ``"gem-miner"``), else ``label``."""
    return next((name for name, s in _method_styles().items() if str(label).startswith(s.label)), label)


def method_of_tag(short: str) -> str:
    """The method of a short run tag (``"mag"`` → ``"magnitude"``), else ``short``."""
    return next((name for name, s in _method_styles().items() if s.tag == short), short)


def tag(method: str, seed: int) -> str:
    """Run tag of a heatmap tick: ``gem_21``, ``syn_42``, ``mag_63``, ``sdeepr_21``."""
    return f"{method_style(method).tag}_{seed}"


def percent(density: float) -> str:
    """A density fraction as the percent text of labels and file names: 0.1 → ``"10"``, 0.07 → ``"7"``."""
    return f"{round(100 * density, 6):g}"


def style():
    """Context manager applying :data:`STYLE` (``with style(): fig = ...``)."""
    return plt.rc_context(STYLE)


def line_color(key, i: int = 0, n: int = 1):
    """Colour of a line keyed by a method, a seed, or else its position ``i`` of ``n`` (viridis)."""
    styles = _method_styles()
    if key in styles:
        return styles[key].color
    if key in SEED_STYLES:
        return SEED_STYLES[key]["color"]
    return plt.cm.viridis(0.9 * i / max(n - 1, 1))


def save(fig: Figure, name: str, figures_dir: str | os.PathLike = "figures",
         formats: Sequence[str] = ("pdf", "png"), dpi: int = 150) -> list[Path]:
    """Write ``<figures_dir>/<name>.pdf`` and ``.png`` atomically and return their paths.

    Each file is written to a temporary file in the same directory and renamed into
    place, so a reader never sees a half-written figure.  Tight bounding box; PDF
    timestamps are dropped so unchanged figures give identical files.

    Args:
        fig: the figure.
        name: file stem, e.g. ``"fc_acc"`` (SPEC §10 names).
        figures_dir: output directory (created if needed).
        formats: file formats (default PDF and PNG).
        dpi: resolution of raster formats.
    """
    out_dir = Path(figures_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in formats:
        target = out_dir / f"{name}.{ext}"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=f".{ext}.part")
        os.close(fd)
        metadata = {"CreationDate": None} if ext == "pdf" else None
        try:
            with style():
                fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight", metadata=metadata)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
