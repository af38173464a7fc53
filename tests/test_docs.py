"""The documentation: README.md (the landing page) and docs/ (the site). Links resolve, code examples name the API as
it is, the README's set-up commands are the ones CI runs, and the site builds in MkDocs' strict mode."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env

DOCS = sorted((REPO / "docs").rglob("*.md"))
PAGES = [REPO / "README.md", *DOCS]

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where a bracket is not a link."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc (MkDocs) and GitHub make it for ASCII headings."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in _HEADING.findall(_FENCE.sub("", page.read_text()))}


def _relative_links(page: Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(page.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_every_relative_link_points_to_an_existing_file_and_heading():
    assert len(DOCS) >= 10, "docs/ should hold the site's pages"
    broken = []
    for page in PAGES:
        for target in _relative_links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_link_check_sees_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Top `x`: it\n\n[ok](a.md#top-x-it) [gone](b.md) `[not](a link)`\n"
                                   "```\n[not](in code)\n```\n[bad anchor](a.md#nowhere) [web](https://example.org)\n")
    page = tmp_path / "a.md"
    assert _relative_links(page) == ["a.md#top-x-it", "b.md", "a.md#nowhere"]
    assert _anchors(page) == {"top-x-it"}


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)


def test_python_examples_parse_and_name_what_the_packages_export():
    """Each Python example compiles, its `from M import a, b` names exist in M, and `bs.X` / `attacks.X` exist: an
    API rename cannot leave a stale example behind."""
    missing = []
    blocks = [(page, code) for page in PAGES for code in _python_blocks(page)]
    assert len(blocks) >= 8
    for page, code in blocks:
        tree = ast.parse(code, filename=str(page))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                module = importlib.import_module(node.module)
                missing += [f"{page.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
            elif isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and not hasattr(importlib.import_module(aliases[node.value.id]), node.attr)):
                missing.append(f"{page.name}: {aliases[node.value.id]}.{node.attr}")
    assert not missing, "examples name what does not exist:\n" + "\n".join(missing)


def test_readme_setup_commands_are_the_ones_ci_runs():
    """`.ci/run` installs and tests exactly as the README's Set up says (with the docs extra, so the strict docs build
    below runs in CI)."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("## Set up"):]
    block = block[block.index("```bash\n") + 8:]
    commands = [line.split("  #")[0].strip() for line in block[:block.index("```")].strip().splitlines()]
    assert len(commands) == 2 and "docs" in commands[0]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci, f".ci/run does not run the README's {command!r}"


def test_readme_stays_a_landing_page_and_both_landing_pages_link_every_page():
    """Under ~200 lines, no generated block (measured tables live in docs/); README.md and docs/index.md (the site's
    landing page) each link every docs page."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "<!-- generated:" not in readme
    for landing in (REPO / "README.md", REPO / "docs" / "index.md"):
        linked = {(landing.parent / t.partition("#")[0]).resolve() for t in _relative_links(landing)}
        pages = {p.resolve() for p in DOCS if p != landing and p.parent.name != "api"} | {
            (REPO / "docs" / "api" / "blindspots.md").resolve()}
        assert pages <= linked, f"{landing.name} links no page for: {sorted(p.name for p in pages - linked)}"


def _mkdocs(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="the docs build needs the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs build needs the docs extra: pip install -e '.[docs]'")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


def test_docs_site_builds_in_strict_mode(tmp_path):
    run = _mkdocs("--site-dir", str(tmp_path / "site"))
    assert run.returncode == 0, run.stdout + run.stderr
    api = (tmp_path / "site" / "api" / "blindspots" / "index.html").read_text()
    assert 'id="blindspots.traversal.level_set_traversal"' in api  # the reference is generated from the docstrings
    home = (tmp_path / "site" / "index.html").read_text()
    assert "blindspots demo" in home and "--8&lt;--" not in home  # the README's sections are included, not named


@pytest.mark.parametrize("page, named", [
    ("[gone](nosuch.md) [bad anchor](index.md#nowhere)\n", ["nosuch.md", "#nowhere"]),
    ("::: blindspots.nosuch\n", ["blindspots.nosuch"]),
    ('--8<-- "README.md:nosuch"\n', ["nosuch"]),
])
def test_strict_build_refuses_broken_links_references_and_snippets(tmp_path, page, named):
    """The site's own configuration (inherited) turns a broken link, anchor, API reference or README section into
    a failed build naming it."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n" + page)
    (tmp_path / "mkdocs.yml").write_text(f"INHERIT: {REPO / 'mkdocs.yml'}\ndocs_dir: docs\nwatch: []\n"
                                         "nav:\n  - index.md\n")
    run = _mkdocs("-f", str(tmp_path / "mkdocs.yml"), "--site-dir", str(tmp_path / "site"))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert all(n in out for n in named), out


@pytest.mark.skipif(__import__("shutil").which("chromium") is None, reason="Chromium is not installed")
def test_no_table_of_the_site_scrolls_sideways_at_1280_px(tmp_path):
    """Issue 30: at 1280 px every table of every page fits the page (docs/extra.css lets the theme's cells wrap), so
    no outcome, interval or figure hides behind a horizontal scroll."""
    from conftest import measure_in_chromium

    run = _mkdocs("--site-dir", str(tmp_path / "site"))
    assert run.returncode == 0, run.stdout + run.stderr
    pages = [p for p in sorted((tmp_path / "site").rglob("index.html")) if "<table" in p.read_text()
             and "api" not in p.parts]
    assert any(p.parent.name == "studies" for p in pages) and len(pages) >= 4
    for page in pages:
        widths = measure_in_chromium(page, "[...document.querySelectorAll('table')]"
                                           ".map(x => [x.scrollWidth, x.clientWidth])")
        assert widths and all(0 < scroll <= client for scroll, client in widths), (page, widths)
