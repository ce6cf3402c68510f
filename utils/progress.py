"""The progress bar every long loop of the library uses.

``tqdm.auto`` draws a widget in Jupyter when ipywidgets is installed and a text bar elsewhere; in
a kernel without ipywidgets it falls back to the text bar but warns "IProgress not found" when
imported, and that warning landed in the committed output of every notebook.  The fallback is
what we want, so the warning is silenced here, once, for every module that draws a bar.

>>> from utils.progress import tqdm
>>> total = sum(tqdm(range(3), disable=True))
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
