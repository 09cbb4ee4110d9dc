"""The docs that are generated from code, and the examples the docs point at."""

from __future__ import annotations

import pathlib
import re
import runpy
import warnings
from typing import Any

import pytest
import trio
import trio.testing

from trioserve import Config, ConfigWarning
from trioserve._cli import cli_markdown
from trioserve._config_sources import load_config, reference_markdown
from trioserve.testing import open_test_client

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_config_reference_is_up_to_date() -> None:
    # A key added to Config without regenerating docs/config.md fails here.
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == reference_markdown(), (
        "docs/config.md is stale: run `python docs/gen_config.py`"
    )


def test_cli_reference_is_up_to_date_and_reads_on_github() -> None:
    # A flag added or changed without regenerating docs/cli.md fails here; the page
    # is plain Markdown, with no directive that only the docs site would expand.
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == cli_markdown(), "docs/cli.md is stale: run `python docs/gen_cli.py`"
    assert ":::" not in committed
    assert "| `-w, --workers INTEGER` |" in committed


@pytest.mark.parametrize(
    ("page", "example"),
    [
        ("configuration.md", "examples/hypercorn.toml"),
        ("embedding.md", "examples/embed.py"),
        ("embedding.md", "examples/test_with_trioserve.py"),
    ],
)
def test_example_files_shown_in_the_docs_are_the_files_that_are_tested(
    page: str, example: str
) -> None:
    # The pages show the examples inline, so that they read on GitHub; the files
    # are what the tests run, and the two must not drift apart.
    text = (ROOT / "docs" / page).read_text()
    assert "```\n" + (ROOT / "docs" / example).read_text().rstrip("\n") + "\n```" in text.replace(
        "```toml\n", "```\n"
    ).replace("```python\n", "```\n")
    assert "--8<--" not in text


async def test_hello_example_serves_its_greeting() -> None:
    namespace = runpy.run_path(str(ROOT / "examples" / "hello.py"))
    async with open_test_client(namespace["app"]) as client:
        response = await client.get("/")
    assert response.status == 200
    assert response.body == b"Hello from trioserve!\n"
    assert response.header("content-length") == "22"


async def test_embedding_example_serves_and_stops() -> None:
    # docs/embedding.md includes this file: it must really work.
    namespace = runpy.run_path(str(ROOT / "docs" / "examples" / "embed.py"))
    with trio.fail_after(10):
        assert await namespace["main"]() == "embedded"


def test_testing_example_passes_in_virtual_time() -> None:
    namespace: dict[str, Any] = runpy.run_path(
        str(ROOT / "docs" / "examples" / "test_with_trioserve.py")
    )
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(namespace["test_slow_endpoint"], clock, clock=clock)
    assert clock.current_time() >= 3  # the app's 3 s sleep passed in virtual time


def test_hypercorn_toml_example_loads_with_one_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(str(ROOT / "docs" / "examples" / "hypercorn.toml"))
    assert [str(w.message) for w in caught if w.category is ConfigWarning] == [
        f"{ROOT / 'docs' / 'examples' / 'hypercorn.toml'}: Hypercorn setting 'server_names' "
        "is not supported by trioserve; ignored"
    ]
    assert config == Config(
        bind=["127.0.0.1:8000"],
        keep_alive_timeout=10,
        graceful_timeout=20,
        h11_max_incomplete_size=32768,
        include_server_header=False,
        accesslog="-",
        errorlog="-",
        loglevel="INFO",
        workers=2,
    )


# --------------------------------------------------------------------------- pages read anywhere

#: The pages a reader sees: every docs page and the README.
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

#: Where prose, comments, docstrings and tests live.
SCANNED_DIRS = ("docs", "trioserve", "tests", "bench", "conformance", "examples")
SCANNED_SUFFIXES = {".md", ".py", ".toml", ".txt", ".yml", ".yaml", ".cfg", ".sh", ".ini"}

_FENCE = re.compile(r"^\s*(```|~~~)")
#: Block syntax that only MkDocs extensions render; GitHub shows it as literal text.
_MKDOCS_BLOCK = re.compile(r"^\s*(:::|!!!|\?\?\?\+?|===\s+\")")
#: Markdown links and images: [text](target) and reference definitions [name]: target.
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")

#: References a reader of the repository cannot follow: documents that live
#: elsewhere, the numbered behaviour list they define, and issue numbers.
OUTSIDE_REFERENCES = {
    "a path to documents outside the repository": re.compile(r"\.\./shared\b|\bshared/design"),
    "an outside design document": re.compile(r"\bdesign\.md\b|\bdesign\s+brief", re.IGNORECASE),
    "a seed case": re.compile(r"\bseed[s]/|\bseed[s]?\s+\d{3}\b"),
    # A capital B and 1..18 standing alone; quoted strings (test data) and hex are not ids.
    "a numbered behaviour id": re.compile(r"(?<![\w\"'\\])B(?:1[0-8]|[1-9])(?![\w\"'])"),
    "an issue number": re.compile(
        r"\b(?:issue|bug|ticket|PR|pull request)\s*#?\d+\b"
        r"|\b[A-Za-z][\w.-]*\s+#\d+\b"
        r"|[\w.-]+/[\w.-]+#\d+\b"
        r"|/(?:issues|pull)/\d+\b",
        re.IGNORECASE,
    ),
}


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines of a Markdown page outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def mkdocs_only_syntax(text: str) -> list[str]:
    """Lines that GitHub would show as literal MkDocs directives."""
    found = [f"{n}: {line}" for n, line in prose_lines(text) if _MKDOCS_BLOCK.match(line)]
    found += [f"{n}: {line}" for n, line in enumerate(text.splitlines(), 1) if "--8<--" in line]
    return found


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub (and MkDocs' toc) give the page's headings."""
    anchors: set[str] = set()
    for _, line in prose_lines(text):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def prose_paragraphs(text: str) -> list[tuple[int, str]]:
    """The paragraphs outside fenced code blocks, each with its first line's number:
    inline code and links may wrap, so they are looked for in whole paragraphs."""
    paragraphs: list[tuple[int, str]] = []
    previous = -1
    for number, line in prose_lines(text):
        if not line.strip():
            previous = -1
            continue
        if previous == number - 1 and paragraphs:
            start, joined = paragraphs[-1]
            paragraphs[-1] = (start, joined + "\n" + line)
        else:
            paragraphs.append((number, line))
        previous = number
    return paragraphs


def link_targets(text: str) -> list[tuple[int, str]]:
    """Every link target outside code, with its line number."""
    targets = []
    for start, paragraph in prose_paragraphs(text):
        # Blank out code spans, keeping the line breaks so line numbers stay right.
        plain = _INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), paragraph)
        for match in _INLINE_LINK.finditer(plain):
            targets.append((start + plain.count("\n", 0, match.start()), match.group(1)))
        # Reference definitions only open a paragraph (one per line).
        for offset, line in enumerate(plain.split("\n")):
            definition = _REFERENCE_LINK.match(line)
            if definition is None:
                break
            targets.append((start + offset, definition.group(1)))
    return targets


def broken_relative_links(page: pathlib.Path) -> list[str]:
    """Relative links on ``page`` whose file, or anchor in that file, does not exist."""
    broken = []
    for number, target in link_targets(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: ...
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.name}:{number}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in github_anchors(file.read_text()):
            broken.append(f"{page.name}:{number}: {target} (no such heading)")
    return broken


def outside_references(text: str) -> list[str]:
    """Lines that point a reader at something outside the repository."""
    return [
        f"{n}: {what}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        for what, pattern in OUTSIDE_REFERENCES.items()
        if pattern.search(line)
    ]


def test_pages_use_no_syntax_only_mkdocs_renders() -> None:
    # Admonitions, snippet includes and API directives show up as literal text on
    # GitHub, where most readers meet these pages.
    found = {page.name: mkdocs_only_syntax(page.read_text()) for page in PAGES}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_every_relative_link_on_a_page_points_to_an_existing_file_and_heading() -> None:
    broken = [link for page in PAGES for link in broken_relative_links(page)]
    assert broken == []


def test_no_page_comment_docstring_or_test_refers_to_documents_outside_the_repository() -> None:
    # A reader has the repository only: a pointer to a document elsewhere, a
    # behaviour number defined there, or an issue number explains nothing. Name
    # the behaviour instead.
    files = [ROOT / "README.md", ROOT / "noxfile.py"] + [
        path
        for directory in SCANNED_DIRS
        for path in sorted((ROOT / directory).rglob("*"))
        if path.suffix in SCANNED_SUFFIXES
        and path.is_file()
        # This file shows, as test data, what the check flags.
        and path != pathlib.Path(__file__).resolve()
    ]
    hits = {
        str(path.relative_to(ROOT)): found
        for path in files
        if (found := outside_references(path.read_text(errors="replace")))
    }
    assert hits == {}


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("- **Header names (B5)** go out lower-case.", True),
        ("## Request bodies and flow control (B6\N{EN DASH}B9)", True),
        ("## Connection close and pipelining (B2, seeds 000 and 001)", True),
        ("sees it. Where the design brief (`shared/design.md`) is silent", True),
        ("see ../shared/style.md", True),
        ("the shape of uvicorn #1637", True),
        ("fixed in issue 12", True),
        ("encode/uvicorn#1637", True),
        ('await send({"type": "websocket.send", "text": "B1"})', False),
        ("raise WSError('protocol', f'RSV bits set in {b0:#04x}')", False),
        ("common_name='#1 \"Smith, J.\"'", False),
        ("0xB1 and AB12 and B19 are not ids", False),
        ("a public issue tracker", False),
    ],
)
def test_outside_reference_check_flags_ids_and_numbers_but_not_look_alikes(
    text: str, flagged: bool
) -> None:
    assert bool(outside_references(text)) is flagged


def test_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: pathlib.Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Sending files: `pathsend`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md) [ok](other.md#sending-files-pathsend) [ok](#page)\n"
        "[gone](missing.md) [gone](other.md#nowhere) `[code](ignored.md)` `code that\n"
        "[wraps]: ignored.md` [wrapped\nlink](missing-too.md)\n"
        "```\n[in a fence](ignored.md)\n```\n[web](https://example.org/x.md)\n\n"
        "[ref]: gone.md\n"
    )
    assert broken_relative_links(page) == [
        "page.md:4: missing.md (no such file)",
        "page.md:4: other.md#nowhere (no such heading)",
        "page.md:5: missing-too.md (no such file)",
        "page.md:12: gone.md (no such file)",
    ]
