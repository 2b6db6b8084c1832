"""The README's and docs' commands and code, checked against the real thing so they cannot drift.

Every fenced block is closed; every C{salvusctl …} line of a shell block parses with the CLI's own
parser (backup and restore with the backup package's); every C{twistd …} line with twistd's, its
C{.tac} files existing; every C{make} target exists; every python block compiles, and the README's
host file loads and validates as a real C{.tac}.  Synopsis lines (C{[OPTIONAL]} parts) are checked
with their optional parts left out.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import tempfile
from collections.abc import Iterator

from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.backup.cli import backupMain, restoreMain
from salvusctl.cli.main import CLIError, parseArgs
from salvusctl.host.loading import loadHost
from tests.helpers import REPO

SHELLS = ("sh", "shell", "bash", "console")
DOCS = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
_FENCE = re.compile(r"^(\s*)```(.*)$")
_OPTIONAL = re.compile(r"\[[^\[\]]*\]")


class Block:
    """One fenced block of a Markdown file: its language word, first line number and lines."""

    def __init__(self, path: str, line: int, language: str, indent: str = ""):
        self.path, self.line, self.language, self.indent = path, line, language, indent
        self.lines: list[str] = []

    def where(self, offset: int = 0) -> str:
        return f"{self.path}:{self.line + offset}"


def blocks(path: str) -> Iterator[Block]:
    """The fenced blocks of C{path}; AssertionError for a fence that never closes or that closes
    with text after it (Markdown then runs the block on into the prose)."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        lines = f.read().splitlines()
    current: Block | None = None
    for number, line in enumerate(lines, 1):
        match = _FENCE.match(line)
        if current is None:
            if match:
                current = Block(path, number + 1, match.group(2).strip().split(" ")[0], match.group(1))
        elif match:
            if match.group(2).strip():
                raise AssertionError(f"{path}:{number}: a closing ``` with text after it: {line!r}")
            yield current
            current = None
        else:
            # a block inside a list item is indented like its fence
            current.lines.append(line[len(current.indent):] if line.startswith(current.indent) else line)
    if current is not None:
        raise AssertionError(f"{path}:{current.line - 1}: a ``` block that never closes")


def commands(line: str) -> Iterator[list[str]]:
    """Each simple command of one shell line (split at C{|}, C{&&}, C{||}, C{;}), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = "#"
    lexer.whitespace_split = True
    argv: list[str] = []
    for token in lexer:
        if token in ("|", "&&", "||", ";", "&"):
            if argv:
                yield argv
            argv = []
        else:
            argv.append(token)
    if argv:
        yield argv


def shellCommands() -> Iterator[tuple[str, list[str]]]:
    """(file:line, argv) of every command in a shell block of the README and the docs."""
    for path in DOCS:
        for block in blocks(path):
            if block.language not in SHELLS:
                continue
            for offset, line in enumerate(block.lines):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                synopsis = _OPTIONAL.sub("", line) if re.search(r"\s\[", line.split("#")[0]) else line
                for argv in commands(synopsis):
                    yield block.where(offset), argv


class _Called(BaseException):
    """The backup CLI got past its parser and made its first call."""


def _raiseCalled(method, *params):
    raise _Called(method)


def checkSalvusctl(argv: list[str]) -> str | None:
    """Why C{salvusctl argv} does not parse, or None."""
    try:
        args = parseArgs(argv)
    except CLIError as e:
        return str(e)
    except SystemExit:
        return None  # -h
    if args.command in ("backup", "restore"):
        printed = _Text()
        main = backupMain if args.command == "backup" else restoreMain
        try:
            main(list(args.rest), _raiseCalled, printed)
        except _Called:
            return None
        return printed.text.strip() or f"{args.command} {args.rest} made no call"
    return None


class _Text:
    def __init__(self):
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text


def checkTwistd(argv: list[str]) -> str | None:
    """Why C{twistd argv} does not parse with twistd's own options (or names a missing tac/ file)."""
    options = ServerOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        return str(e)
    files = [options["python"]] + ([options.subOptions["config"]] if options.subCommand == "salvus" else [])
    for name in files:
        if name and name.startswith("tac/") and not os.path.exists(os.path.join(REPO, name)):
            return f"{name}: no such file"
    if options.subCommand not in ("salvus", None):
        return f"unknown twistd command {options.subCommand!r}"
    return None


def compiles(block: Block) -> str | None:
    """Why a python block does not compile, or None.  A fragment with a bare C{yield} (a line of
    an C{inlineCallbacks} function) is compiled as the body of a generator function."""
    text = "\n".join(block.lines) + "\n"
    try:
        compile(text, block.where(), "exec")
        return None
    except SyntaxError as e:
        if "outside function" not in str(e):
            return str(e)
    try:
        compile("def fragment():\n" + "".join(f"    {line}\n" for line in block.lines), block.where(), "exec")
    except SyntaxError as e:
        return str(e)
    return None


def makeTargets() -> set[str]:
    with open(os.path.join(REPO, "Makefile")) as f:
        return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*):", f.read(), re.M)}


class DocsTests(SynchronousTestCase):
    """What a new user copies from the README must work as written."""

    def test_everyFenceCloses(self):
        """A fence closed with text after it turns the rest of the page into one code block."""
        for path in DOCS:
            self.assertIsInstance(list(blocks(path)), list)

    def test_blocksFailOnABrokenFence(self):
        """The fence check itself catches the README's old fault (``` followed by prose)."""
        with tempfile.NamedTemporaryFile("w", suffix=".md", dir=REPO, delete=False) as f:
            f.write("```sh\nsalvusctl status\n``` and then prose\n")
        self.addCleanup(os.unlink, f.name)
        with self.assertRaises(AssertionError):
            list(blocks(os.path.basename(f.name)))

    def test_salvusctlCommandsParse(self):
        """Every salvusctl line of the README and the docs is accepted by the real CLI's parser."""
        checked, bad = 0, []
        for where, argv in shellCommands():
            if os.path.basename(argv[0]) != "salvusctl":
                continue
            checked += 1
            why = checkSalvusctl(argv[1:])
            if why:
                bad.append(f"{where}: {shlex.join(argv)}: {why}")
        self.assertEqual(bad, [])
        self.assertGreater(checked, 15)

    def test_badSalvusctlCommandIsCaught(self):
        """The check refuses what the CLI refuses, backup's own verbs included."""
        self.assertIsNone(checkSalvusctl(["restore", "--dry-run"]))
        self.assertIsNotNone(checkSalvusctl(["balancer", "frobnicate"]))
        self.assertIsNotNone(checkSalvusctl(["backup", "nosuchverb"]))
        self.assertIsNotNone(checkSalvusctl(["status", "--nosuchoption"]))

    def test_twistdCommandsParse(self):
        """Every twistd line parses with twistd's options and the salvus plugin's, and the example
        hosts it names exist."""
        checked, bad = 0, []
        for where, argv in shellCommands():
            if argv[0] == "twistd":
                checked += 1
                why = checkTwistd(argv[1:])
                if why:
                    bad.append(f"{where}: {shlex.join(argv)}: {why}")
        self.assertEqual(bad, [])
        self.assertGreater(checked, 3)
        self.assertIsNotNone(checkTwistd(["-n", "salvus", "--config", "tac/nosuch.tac"]))

    def test_makeTargetsExist(self):
        targets = makeTargets()
        bad = [f"{where}: make {' '.join(argv[1:])}" for where, argv in shellCommands()
               if argv[0] == "make" and not set(argv[1:]) <= targets]
        self.assertEqual(bad, [])

    def test_pythonBlocksCompile(self):
        """Every python block of the README and the docs is valid Python."""
        bad = []
        for path in DOCS:
            for block in blocks(path):
                if block.language in ("python", "py"):
                    why = compiles(block)
                    if why:
                        bad.append(f"{block.where()}: {why}")
        self.assertEqual(bad, [])

    def test_readmeHostFileLoadsAndValidates(self):
        """The README's host file is a working .tac: it loads and validates as written."""
        [source] = [b for b in blocks("README.md") if b.language == "python"
                    and any("Host(" in line for line in b.lines)]
        directory = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, directory, True)
        path = os.path.join(directory, "host.tac")
        with open(path, "w") as f:
            f.write("\n".join(source.lines) + "\n")
        cwd = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, cwd)
        host = loadHost(path)
        host.validate()
        self.assertEqual(host.name, "web1")
