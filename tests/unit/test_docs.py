"""README.md and docs/*.md: every relative link reaches a file of this repository, and every
`#anchor` in such a link (same page or another page) names a heading of the page it points to,
by GitHub's rules for heading ids. Offline, no torch, a fraction of a second.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
# [text](target) and ![alt](target), an optional "title" after the target; <target> form too.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ID = re.compile(r"<a\s+[^>]*(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
LINE_ANCHOR = re.compile(r"L\d+(-L\d+)?")


def pages() -> List[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and not line.strip()[len(match.group(1)):].strip():
            fence = None
        elif fence is None:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's id for a heading: the rendered text, lowercased, every character other than a
    letter, mark, number, connector ('_'), space or '-' dropped, spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags render as nothing
    text = text.lower()
    kept = "".join(ch for ch in text if unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc"
                   or ch in " -")
    return kept.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """Every id a link can point to on this page: its headings (repeats get -1, -2, ... as on
    GitHub) and explicit <a id/name> anchors."""
    found: Set[str] = set()
    seen: dict = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ID.findall(line))
    return found


def links(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, target) of every link on the page outside code (fenced blocks, code spans)."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub(lambda m: "code", line)
        for match in LINK.finditer(line):
            yield number, match.group(1).strip("<>")
        reference = REFERENCE.match(line)
        if reference:
            yield number, reference.group(1).strip("<>")


def broken_links(path: Path, root: Path = ROOT) -> List[str]:
    """What is wrong with the page's relative links, one line each (empty: nothing)."""
    problems = []
    for number, target in links(path):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # http(s):, mailto: ...: not checked here (no network)
        where = f"{path.relative_to(root)}:{number}: ({target})"
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if root.resolve() not in (destination, *destination.parents):
            problems.append(f"{where} leaves the repository")
            continue
        if not destination.exists():
            problems.append(f"{where} no such file: {destination.relative_to(root.resolve())}")
            continue
        if not anchor:
            continue
        if destination.suffix.lower() == ".md":
            if anchor not in anchors(destination):
                problems.append(f"{where} no heading #{anchor} in {destination.relative_to(root.resolve())}")
        elif not LINE_ANCHOR.fullmatch(anchor):
            problems.append(f"{where} #{anchor}: only .md pages have heading anchors (a file takes #L<n>)")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in links(ROOT / "README.md")
              if not SCHEME.match(target) and target.partition("#")[0]}
    orphans = [str(p.relative_to(ROOT)) for p in sorted(DOCS.rglob("*.md")) if p.resolve() not in linked]
    assert orphans == [], "pages under docs/ that README.md does not link to"


@pytest.mark.parametrize("heading, expected", [
    ("Drawing a log again: `streamer render`", "drawing-a-log-again-streamer-render"),
    ("Live sources: webcams, RTSP cameras, the window", "live-sources-webcams-rtsp-cameras-the-window"),
    ("Speed on 2 CPU cores (no GPU)", "speed-on-2-cpu-cores-no-gpu"),
    ("For contributors: the test tiers", "for-contributors-the-test-tiers"),
    ("max_size and --in-flight", "max_size-and---in-flight"),
    ("Ünïcode stays, dots go: v2.0", "ünïcode-stays-dots-go-v20"),
    ("A [linked](https://example.com) heading", "a-linked-heading"),
])
def test_heading_ids_follow_githubs_rules(heading, expected):
    assert slug(heading) == expected


def test_the_checker_reports_a_missing_file_a_missing_heading_and_ignores_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Same name\n\n## Same name\n\n```\n# not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Front\n\n"
        "[ok](docs/a.md) [ok](docs/a.md#a-page) [ok](docs/a.md#same-name-1) [ok](#front)\n"
        "[gone](docs/b.md) [no such heading](docs/a.md#not-a-heading) [no such heading here](#nowhere)\n"
        "`[in code](docs/c.md)` [web](https://example.com/x#y) [outside](../elsewhere.md)\n"
        "```\n[in a fence](docs/d.md)\n```\n")
    problems = broken_links(page, root=tmp_path)
    assert [p.split(" (")[1].split(")")[0] for p in problems] == [
        "docs/b.md", "docs/a.md#not-a-heading", "#nowhere", "../elsewhere.md"], problems
