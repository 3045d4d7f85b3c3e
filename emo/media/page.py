"""What the toolkit's self-contained HTML pages share (dataprep's dataset viewer, eval's report)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def page_check_script() -> str:
    """A <script> that marks on <body> how many images and videos the page embeds and how many
    failed to decode (data-images, data-broken-images, data-videos-ready, data-videos-failed), so a
    reader, or a headless browser in the tests, sees at once whether the page is whole."""
    return (Path(__file__).with_name("page_check.html")).read_text()
