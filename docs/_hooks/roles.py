"""MkDocs hook: the docstrings cross-reference in reST roles (:class:`Refiner`,
:meth:`~posefix.refiner.Refiner.refine_image`), which Markdown leaves as literal text
before a code span. Drop the role (and Sphinx's leading ``~``), keep the code span."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj|const):(<code[^>]*>)~?")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(r"\1", html)
