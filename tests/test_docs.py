"""The README and the docs/ pages: the README stays short and in the issue's order, its links
lead somewhere, the architecture page names every module, and every page is in the site's
navigation. (``mkdocs build --strict`` in .ci/run checks the site's own links; this runs
without mkdocs.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PACKAGE = ROOT / "src" / "posefix"


def _headings(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.MULTILINE)


def test_readme_is_short_and_in_order() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 15_000
    assert _headings(text) == ["Try it", "Refine your own estimator's output", "Results", "Links"]
    assert text.index("![") < text.index("## Try it")  # the demo picture comes first


def test_readme_commands_are_the_lean_demo_and_the_dev_tests() -> None:
    block = README.read_text().split("## Try it", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    demo, tests = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert demo == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/posefix demo"
    assert tests == ('python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && '
                     ".venv/bin/python -m pytest -q")


def _relative_links(page: Path) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_readme_links_lead_to_files_and_headings() -> None:
    text = README.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in _headings(text)}
    broken = []
    for link in _relative_links(README):
        path, _, anchor = link.partition("#")
        if path and not (ROOT / path).exists():
            broken.append(link)
        elif not path and anchor not in anchors:
            broken.append(link)
    assert broken == []


def _nav_pages(nav: list) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_page_is_in_the_site_navigation() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def test_architecture_page_names_every_module() -> None:
    named = set(re.findall(r"^\| `([\w/]+\.py)`", (DOCS / "architecture.md").read_text(),
                           flags=re.MULTILINE))
    library = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    verbs = {p.name for p in (PACKAGE / "commands").glob("*.py")} - {"__init__.py"}
    # a verb shares its file name with a library module (refine.py, export.py, ...): the
    # tables are checked together, by file name
    assert named == library | verbs
