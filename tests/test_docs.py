"""The docs hold together: README is a front door (at most 200 lines), every relative link in
the project's Markdown points at a file that exists and every #anchor at a heading there, and
CI runs exactly README's two commands (their setup, lint, their test command)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.conftest import REPO

README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target); the target may be <...> and may carry a "title".
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files(repo: Path) -> list[Path]:
    """The project's own Markdown: the top level, docs/ and notebooks/."""
    found = [*repo.glob("*.md"), *repo.glob("docs/**/*.md"), *repo.glob("notebooks/*.md")]
    return sorted(p for p in found if p.is_file())


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked."""
    out, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append((number, INLINE_CODE.sub("", line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every #anchor a Markdown file has: its headings (repeats get -1, -2, ...) and <a name>/<a id>."""
    text = path.read_text()
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(text))
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link in a Markdown file, outside code."""
    out = []
    for number, line in prose_lines(path.read_text()):
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        ref = REFERENCE_DEF.match(line)
        if ref:
            targets.append(ref.group(1))
        out.extend((number, t.strip("<>")) for t in targets)
    return out


def broken_links(repo: Path, files: list[Path]) -> list[str]:
    """'file:line: target (why)' for each relative link to a missing file or a missing #anchor."""
    broken = []
    for path in files:
        for number, target in links(path):
            if EXTERNAL.match(target):
                continue
            where = f"{path.relative_to(repo)}:{number}: {target}"
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading with that anchor in {dest.name})")
    return broken


def test_readme_is_a_front_door() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the detail into docs/"


def test_every_relative_link_and_anchor_resolves() -> None:
    files = markdown_files(REPO)
    assert {REPO / "README.md", REPO / "ARCHITECTURE.md"} <= set(files)
    assert any(p.parent == REPO / "docs" for p in files)
    assert broken_links(REPO, files) == []


def test_readme_links_every_doc() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for _, t in links(REPO / "README.md") if not EXTERNAL.match(t)}
    unlinked = [str(p.relative_to(REPO)) for p in sorted((REPO / "docs").glob("*.md")) if p.resolve() not in linked]
    assert unlinked == [], "docs that README does not lead to"


def test_a_broken_link_or_anchor_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# HTTP API\n\n## Face Search (photos)\n\n## Errors\n\n## Errors\n")
    (tmp_path / "README.md").write_text(
        "# Demo\n\n"
        "Good: [api](docs/api.md), [photos](docs/api.md#face-search-photos), [again](docs/api.md#errors-1),\n"
        "[here](#demo), [web](https://example.com/missing.md), [dir](docs/).\n"
        "Bad: [gone](docs/operations.md) and [anchor](docs/api.md#no-such-heading) and [self](#nowhere).\n"
        "`[in code](docs/missing.md)` is not a link.\n\n"
        "```\n[in a fence](docs/missing.md)\n```\n\n"
        "[ref]: docs/also-missing.md\n"
    )
    assert broken_links(tmp_path, markdown_files(tmp_path)) == [
        "README.md:5: docs/operations.md (no such file)",
        "README.md:5: docs/api.md#no-such-heading (no heading with that anchor in api.md)",
        "README.md:5: #nowhere (no heading with that anchor in README.md)",
        "README.md:12: docs/also-missing.md (no such file)",
    ]


def test_slug_follows_github() -> None:
    assert slug("BIB search (race numbers)") == "bib-search-race-numbers"
    assert slug("Video clipping: search by selfie") == "video-clipping-search-by-selfie"
    assert slug("`api.max_selfies` and [the contract](x.md)") == "apimax_selfies-and-the-contract"
    assert slug("Searches: POST → terminal, 20 sequential") == "searches-post--terminal-20-sequential"


def commands(lines: list[str]) -> list[str]:
    """The commands of a shell text: no comments, no blank lines."""
    return [line.split(" #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def readme_two_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return commands(block.splitlines())


def test_ci_runs_readme_two_commands_setup_lint_and_tests() -> None:
    demo, test = readme_two_commands()
    setup = demo.split("&&")[0].strip()
    assert setup == "bash scripts/setup.sh", demo
    ci = commands((REPO / ".ci" / "run").read_text().splitlines())
    ci = [c for c in ci if not c.startswith(("set ", "cd "))]
    assert ci[:3] == [setup, ".venv/bin/ruff check .", test]
    # After the tests: the soak's short variant (issue 26) and the mutation step (issue 27).
    after = ci[3:]
    assert [shlex.split(c)[:2] for c in after if c.startswith(".venv/")] == [
        [".venv/bin/python", "bench/soak.py"],
        [".venv/bin/python", "bench/mutation.py"],
    ], after
    assert "--changed" in after[-1] and "--budget-s" in after[-1]
    # The setup installs every local server the tests start: no skip for a missing one.
    setup_commands = commands((REPO / "scripts" / "setup.sh").read_text().splitlines())
    assert "bash scripts/setup-s3-test-server.sh" in setup_commands
    assert shlex.split(test)[:3] == [".venv/bin/python", "-m", "pytest"]
