"""The code blocks of README.md and docs/*.md, and what the docs test does with each.

A block's directive is an HTML comment on the line(s) right before its fence (invisible
when the Markdown is rendered):

    <!-- not run: WHY -->     not run; WHY must say why (needs Docker, a diagram, ...)
    <!-- file: NAME -->       saved as NAME in the document's working directory, for a later
                              block to run (a later run block must name NAME)
    <!-- output -->          a `text` block: every line of it must be in the output of the
                              run block just before it (a script's stdout, a page's text)
    <!-- broker config -->   a `toml` block the document's broker is started with
    <!-- browser: URL -->    an `html` block opened in Chromium at URL (the test answers URL)
    <!-- run: paths -->      a `text` listing: the first word of each line that starts in
                              column 0 is a path that must exist in the repository

A block without a directive is run by its language: `python` as a script, `sh` (or `bash`,
`shell`, `console`) with bash, `toml` loaded as a config file by `gateway.config`. Any other
block needs a directive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

REPO_ROOT = Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r"^<!--\s*(?P<body>.*?)\s*-->\s*$", re.DOTALL)
SHELL_LANGS = {"sh", "bash", "shell", "console"}


class DocError(Exception):
    """A block whose directive or language the docs test cannot act on."""


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str  # first word of the info string, "" if none
    text: str
    kind: str  # not-run, file, output, broker-config, browser, paths, python, shell, config
    arg: str = ""  # the reason, file name or URL of the directive

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def documents() -> list[Path]:
    """README.md and every docs/*.md."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The code blocks of one Markdown file, each with what to do with it."""
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    found = []
    for i, token in enumerate(tokens):
        if token.type not in ("fence", "code_block"):
            continue
        lang = token.info.split()[0].lower() if token.info.strip() else ""
        line = (token.map[0] + 1) if token.map else 0
        directive = None
        previous = tokens[i - 1] if i else None
        if previous is not None and previous.type == "html_block":
            match = DIRECTIVE.match(previous.content.strip())
            if match:
                directive = " ".join(match["body"].split())
        kind, arg = _classify(directive, lang, f"{path.name}:{line}")
        found.append(Block(path, line, lang, token.content, kind, arg))
    return found


def _classify(directive: str | None, lang: str, where: str) -> tuple[str, str]:
    if directive is None:
        if lang == "python":
            return "python", ""
        if lang in SHELL_LANGS:
            return "shell", ""
        if lang == "toml":
            return "config", ""
        raise DocError(f"{where}: a {lang or 'plain'} block with no directive: mark it "
                       "<!-- not run: WHY --> (or another directive of tests/docs/docs_blocks.py)")
    name, _, arg = directive.partition(":")
    name, arg = name.strip(), arg.strip()
    if name == "not run":
        if not arg:
            raise DocError(f"{where}: <!-- not run: --> needs the reason after the colon")
        return "not-run", arg
    if name == "file" and arg:
        return "file", arg
    if name == "output" and lang == "text":
        return "output", ""
    if name == "broker config" and lang == "toml":
        return "broker-config", ""
    if name == "browser" and lang == "html" and arg.startswith("http://"):
        return "browser", arg
    if name == "run" and arg == "paths" and lang == "text":
        return "paths", ""
    raise DocError(f"{where}: directive <!-- {directive} --> does not fit a {lang or 'plain'} "
                   "block (see tests/docs/docs_blocks.py)")
