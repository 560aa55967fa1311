"""The pages of a report: a small document model (headings, paragraphs, images, tables,
links) rendered to Markdown and static HTML, and the folder it is written to, atomically,
``index.html`` last (a folder without it is not a finished report)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .jsonfiles import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Document", "ReportFolder"]

_DPI = 100
#: A report folder holding all of these is finished (index.html is written last).
_COMPLETE_MARKERS = ("index.html", "report.md", "report.json", "figures.json")


@dataclass
class Document:
    """A tiny document model rendered both to Markdown and to static HTML."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def image(self, path: str, alt: str, caption: str) -> None:
        self.blocks.append(("img", (path, alt, caption)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def links(self, items: Sequence[tuple[str, str]]) -> None:
        self.blocks.append(("links", list(items)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, b in self.blocks:
            if kind == "h2":
                out += [f"## {b}", ""]
            elif kind == "p":
                out += [b, ""]
            elif kind == "img":
                path, alt, caption = b
                out += [f"![{alt}]({path})", "", f"*{caption}*", ""]
            elif kind == "table":
                header, rows = b
                cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
                out.append("| " + " | ".join(cell(h) for h in header) + " |")
                out.append("| " + " | ".join("---" for _ in header) + " |")
                out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
                out.append("")
            elif kind == "links":
                out += [" · ".join(f"[{text}]({href})" for text, href in b), ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
               f"<title>{e(self.title)}</title>", f"<style>{_CSS}</style>", "</head>",
               "<body>", f"<h1>{e(self.title)}</h1>"]
        for kind, b in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{e(b)}</h2>")
            elif kind == "p":
                out.append(f"<p>{e(b)}</p>")
            elif kind == "img":
                path, alt, caption = b
                out.append(f'<figure><a href="{e(path)}"><img src="{e(path)}" alt="{e(alt)}">'
                           f"</a><figcaption>{e(caption)}</figcaption></figure>")
            elif kind == "table":
                header, rows = b
                out.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>"
                                                          for h in header) + "</tr></thead>")
                out.append("<tbody>" + "".join(
                    "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>"
                    for r in rows) + "</tbody></table>")
            elif kind == "links":
                out.append("<p>" + " · ".join(f'<a href="{e(href)}">{e(text)}</a>'
                                              for text, href in b) + "</p>")
        out += ["</body>", "</html>", ""]
        return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;"
        "color:#222}h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ddd}"
        "figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}"
        "figcaption{color:#555;font-size:.9em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}")


class ReportFolder:
    """Writes a report folder: old completion markers removed first, index.html last."""

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir)
        if self.root.exists() and not self.root.is_dir():
            raise FileExistsError(f"{self.root}: exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        for name in _COMPLETE_MARKERS:
            (self.root / name).unlink(missing_ok=True)
        for old in (*self.root.glob("examples/best_*.png"),
                    *self.root.glob("examples/worst_*.png")):
            old.unlink()  # an earlier report's example pictures
        self.figures: dict[str, Path] = {}

    def figure(self, name: str, fig: Figure) -> str:
        """Save a figure as ``name`` (relative to the folder) and return ``name``."""
        path = self.root / name
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=_DPI,
                                                 metadata={"Software": None}), binary=True)
        self.figures[name] = path
        return name

    def png(self, name: str, image: np.ndarray) -> str:
        from PIL import Image

        def write(f: Any) -> None:
            Image.fromarray(image).save(f, format="PNG")

        path = atomic_write(self.root / name, write, binary=True)
        self.figures[name] = path
        return name

    def finish(self, doc: Document, report: Any, drawn: Any) -> dict[str, Path]:
        paths = {
            "json": atomic_write(self.root / "report.json",
                                 lambda f: json.dump(_plain(report), f, indent=1)),
            "figures_json": atomic_write(self.root / "figures.json",
                                         lambda f: json.dump(_plain(drawn), f, indent=1)),
            "markdown": atomic_write(self.root / "report.md", lambda f: f.write(doc.markdown())),
        }
        paths["index"] = atomic_write(self.root / "index.html", lambda f: f.write(doc.html()))
        return paths


def _plain(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays to Python, NaN to None."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
