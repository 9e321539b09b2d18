"""README.md and docs/*.md say only what resolves: links, anchors, pictures, `f1` flags and config keys.

Read as a newcomer would follow them: every relative link and image points at a file in the
repository, every `#anchor` at a heading of its target (GitHub's slugs), no link leaves the
repository, every flag shown in an `f1 ...` command is one that sub-command takes (from the
typer app itself, so the seed's underscore aliases count), and every `--set section.key=value`
or config key in inline code passes the config loader (seed aliases included). A failure names
the file, the line and the bad text. Fast: no simulator, no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
from typer.main import get_command

from f1.cli import app
from f1.shared.config import ConfigError, F1Config, load_config
from f1.shared.seed_keys import ALIASES, IGNORED

REPO = Path(__file__).resolve().parents[1]
ROOT = get_command(app)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text"}
COMMAND_END = {"&&", "||", ";", "|"}  # in a code block; in inline code a lone | separates alternatives
CONFIG_SECTIONS = {f.name for f in dataclasses.fields(F1Config)}
CONFIG_KEY = re.compile(rf"^({'|'.join(sorted(CONFIG_SECTIONS))})(\.\w+)+(\s*[=:]\s*(.*))?$")
FILE_SUFFIX = re.compile(r"\.(pt|py|json|jsonl|md|png|mp4|yaml|tar|zarr|npy|lock|log)$")
PLACEHOLDER_OVERRIDE = "section.key=value"  # the syntax itself, as the docs spell it


class Line(NamedTuple):
    page: Path
    number: int
    text: str
    fence: str | None  # the code block's language ("" untagged), or None outside code blocks

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.number}"


def lines(page: Path) -> Iterator[Line]:
    fence = None
    for number, text in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(text)
        if match:
            fence = match.group(2).lower() if fence is None else None
            continue
        yield Line(page, number, text, fence)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lowercase, punctuation but - and _ dropped, spaces -> -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # _emphasis_ markers, not snake_case
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for line in lines(page):
        match = HEADING.match(line.text)
        if line.fence is not None or not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return frozenset(out)


def prose(line: Line) -> str:
    """The line with its inline code removed: links inside code are not links."""
    return INLINE_CODE.sub("", line.text)


def link_problems(page: Path) -> list[str]:
    problems = []
    for line in lines(page):
        if line.fence is not None:
            continue
        for target in LINK.findall(prose(line)):
            bad = f"{line.where()}: link '{target}'"
            if SCHEME.match(target):
                problems.append(f"{bad} leaves the repository (cite it as plain text instead)")
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.is_relative_to(REPO):
                problems.append(f"{bad} points outside the repository")
            elif not resolved.exists():
                problems.append(f"{bad}: no file {resolved.relative_to(REPO)}")
            elif anchor:
                if resolved.suffix != ".md":
                    problems.append(f"{bad}: an anchor into {resolved.relative_to(REPO)}, which has no headings")
                elif anchor not in anchors(resolved):
                    problems.append(f"{bad}: no heading '#{anchor}' in {resolved.relative_to(REPO)}")
    return problems


# ----------------------------------------------------------------------------- commands


class Shown(NamedTuple):
    line: Line
    tokens: list[str]
    inline: bool


def shell_words(text: str, comments: bool) -> list[str]:
    try:
        return shlex.split(text, comments=comments)
    except ValueError:  # an unbalanced quote in prose: plain words serve
        return text.split()


def shown_commands(page: Path) -> Iterator[Shown]:
    """Each shell line of a code block (continuations joined) and each inline code span, as words."""
    pending: Line | None = None
    for line in lines(page):
        if line.fence is None:
            pending = None
            for _, code in INLINE_CODE.findall(line.text):
                yield Shown(line, shell_words(code.replace("\\|", "|"), comments=False), inline=True)
            continue
        if line.fence not in SHELL_LANGS:
            continue
        joined = line if pending is None else pending._replace(text=pending.text + " " + line.text.strip())
        if joined.text.rstrip().endswith("\\"):
            pending = joined._replace(text=joined.text.rstrip()[:-1])
            continue
        pending = None
        yield Shown(joined, shell_words(joined.text, comments=True), inline=False)


def is_group(command) -> bool:
    return hasattr(command, "commands")  # duck-typed: typer may bring its own copy of click


def option_names(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if param.param_type_name == "option":
            names.update(param.opts + param.secondary_opts)
    return names


def f1_invocations(shown: Shown) -> Iterator[tuple[list, str, list[str]]]:
    """(the sub-commands named, their path as written, the words after them) for each `f1` in the words."""
    words = shown.tokens
    for start, word in enumerate(words):
        if word != "f1":
            continue
        nodes = [ROOT]
        path = ["f1"]
        rest = words[start + 1 :]
        while rest and all(is_group(node) for node in nodes):
            alternatives = rest[0].split("|")  # `f1 dataset stats|verify` names several
            if not all(alt in node.commands for node in nodes for alt in alternatives):
                break
            nodes = [node.commands[alt] for node in nodes for alt in alternatives]
            path.append(rest.pop(0))
        end = next((i for i, w in enumerate(rest) if w in COMMAND_END and not (shown.inline and w == "|")), len(rest))
        yield nodes, " ".join(path), rest[:end]


def flag_problems(page: Path) -> list[str]:
    problems = []
    for shown in shown_commands(page):
        for nodes, path, rest in f1_invocations(shown):
            if rest and re.fullmatch(r"[a-z][a-z_-]*", rest[0]) and all(is_group(n) for n in nodes):
                problems.append(f"{shown.line.where()}: `{path}` has no sub-command '{rest[0]}'")
                continue
            for word in rest:
                flag = word.strip("[](),").split("=", 1)[0]
                if not flag.startswith("--") or flag == "--":
                    continue
                for node in nodes:
                    if flag not in option_names(node):
                        problems.append(f"{shown.line.where()}: `{path}` takes no flag '{flag}'")
    return problems


# ----------------------------------------------------------------------------- config keys


def key_exists(dotted: str) -> bool:
    """Whether a config key exists in the schema, spelt as f1 or the seed spells it."""
    if dotted in IGNORED or dotted in ALIASES:
        return True
    node = F1Config()
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return True


@functools.cache
def override_problem(override: str) -> str | None:
    """None if `--set <override>` loads (the real loader: seed aliases, types, ranges), else its one line."""
    try:
        load_config(None, [override])
    except ConfigError as exc:
        return str(exc)
    return None


def config_problems(page: Path) -> list[str]:
    problems = []
    for shown in shown_commands(page):
        words = shown.tokens
        for i, word in enumerate(words):
            if word == "--set" and i + 1 < len(words):
                override = words[i + 1]
            elif word.startswith("--set="):
                override = word.removeprefix("--set=")
            else:
                continue
            if override == PLACEHOLDER_OVERRIDE:
                continue
            problem = override_problem(override)
            if problem:
                problems.append(f"{shown.line.where()}: --set {override}: {problem}")
        if not shown.inline:
            continue
        code = " ".join(words)
        match = CONFIG_KEY.match(code)
        if match and not FILE_SUFFIX.search(code):
            tail = match.group(3) or ""  # `=value` or `: value`, as in `model.preset: tiny`
            key, value = code[: len(code) - len(tail)], match.group(4)
            if not key_exists(key):
                problems.append(f"{shown.line.where()}: config key '{key}' is not in the schema (shared/config.py)")
            elif value and (problem := override_problem(f"{key}={value}")):
                problems.append(f"{shown.line.where()}: `{code}`: {problem}")
    return problems


@pytest.mark.parametrize("check", [link_problems, flag_problems, config_problems], ids=lambda f: f.__name__)
def test_docs_resolve(check):
    problems = [problem for page in PAGES for problem in check(page)]
    assert not problems, "\n" + "\n".join(problems)


def test_the_checks_see_the_pages():
    """Guard against a check that passes because it reads nothing: the README shows commands, links and keys."""
    readme = REPO / "README.md"
    commands = [inv for shown in shown_commands(readme) for inv in f1_invocations(shown)]
    assert len(commands) >= 10, commands
    assert any(path == "f1 train student" and "--teacher_path" in rest for _, path, rest in commands)
    assert sum(1 for line in lines(readme) if LINK.search(prose(line))) >= 10
    assert slug("bench_collect — 2026-11-24 22:34") == "bench_collect--2026-11-24-2234"
    assert slug("Does it touch the clutter? (contact, objects moved)") == "does-it-touch-the-clutter-contact-objects-moved"
    assert key_exists("student.rewards.memory_divergence_weight") and not key_exists("training.bptt_lenght")
