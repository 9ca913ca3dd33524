"""The docs are true: every command block in README.md and docs/*.md runs, every settings
example is valid settings, and every option a doc shows exists.

Each document's shell blocks (```sh, ```bash, ```console, ```shell) run in order in one
shell (``bash -e``) in a fresh directory, against what they start themselves (a real
Mosquitto from the provisioned configuration, a store worker, agents on simulated
hardware): a stale example fails the build. A command ending in ``&`` runs in the
background until the document's last block has run. Two marks, an HTML comment on the
line before a block, say what the test does instead:

    <!-- not run: REASON -->      the block is not run here, for that reason (a Pi, sudo)
    <!-- file: PATH -->           the block (a store.toml, a device.toml) is written to PATH
                                  before the next shell block runs

The docs are written for a real installation; the test roots its places in the run's
directory (``PLACES``), stands the agency's directory in for the placeholder ``AGENCY``,
and gives the broker a free port instead of 8883.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import ASSIGNMENT, DEVICE_TOML
from agent.identity import IDENTITY
from agent.provisioned import PROVISION
from agent.status_file import STATUS
from common.settings import DeviceConfig, Sync
from evidence.layout import CHAIN, KEYS, PRIVATE, PUBKEY, SEGMENTS, SPOOL
from evidence.protocol import WHOLE_LIMIT
from evidence.seal import KINDS
from provisioning.broker_config import render_acl
from simulator.mosquitto import free_port
from store.config import StoreConfig
from unbroken.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = DOCS[0].read_text(encoding="utf-8")
SHELL = {"sh", "bash", "console", "shell"}
PLACES = ("/var/lib/unbroken", "/etc/unbroken", "/srv/unbroken", "/tmp")
AGENCY = "/etc/unbroken/agency"  # what the placeholder AGENCY stands for
PORT = "8883"  # the broker's port in the docs
DOC_SECONDS = 300  # one document's blocks, all together
CLONE = (".venv", "simulator")  # what the docs use of a clone (shipped scenarios, routes)

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARK = re.compile(r"^\s*<!--\s*(not run|file):\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    mark: tuple[str, str] | None  # ("not run", reason) or ("file", path)

    @property
    def where(self) -> str:
        doc = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc
        return f"{doc}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, its text dedented by the fence's indentation."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang, start = len(opening.group(1)), opening.group(2), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        i += 1
        before = next((t for t in reversed(lines[:start]) if t.strip()), "")
        mark = _MARK.match(before)
        found.append(
            Block(
                doc,
                start + 1,
                lang,
                "\n".join(body) + "\n",
                (mark.group(1), mark.group(2)) if mark else None,
            )
        )
    return found


def all_blocks() -> Iterator[Block]:
    for doc in DOCS:
        yield from blocks(doc)


def _doc_id(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


# -- fast: what the docs show exists ------------------------------------------------------


def test_every_mark_is_one_the_test_honours() -> None:
    """A block not run says why; a file block is not a command; a shell block is either run
    or marked, so a new block that cannot run here must say so."""
    for b in all_blocks():
        if b.mark is None:
            continue
        kind, value = b.mark
        assert value, f"{b.where}: a '{kind}' mark without its reason or path"
        if kind == "file":
            assert b.lang not in SHELL, f"{b.where}: a command block cannot be a file"
        else:
            assert b.lang in SHELL, f"{b.where}: only command blocks are run, or not"


@pytest.mark.parametrize(
    "block",
    [b for b in all_blocks() if b.lang == "toml"],
    ids=lambda b: b.where,
)
def test_every_settings_example_is_valid(block: Block) -> None:
    data = tomllib.loads(block.text)
    if "database" in data or "receipts" in data:  # a store.toml (or a part of one)
        if "database" in data:
            StoreConfig.model_validate(data)
        return
    if block.doc.name == "testers-guide.md":
        return  # scenario files: tests/test_scenarios.py plays the shipped ones
    DeviceConfig.model_validate(data)


def _commands(text: str) -> Iterator[list[str]]:
    """Each ``unbroken ...`` command in a block, continuation lines joined, comments cut."""
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split(" #")[0].split()
        at = next(
            (
                i
                for i, w in enumerate(words[:-1])
                if (w == "unbroken" or w.endswith("/unbroken")) and words[i + 1][0].isalpha()
            ),
            None,
        )
        if at is not None:
            yield words[at + 1 :]


def _options(words: list[str]) -> set[str] | None:
    """The options the command named by ``words`` takes (None: not a command we know)."""
    parser = build_parser(words)
    for word in words:
        if word.startswith("-"):
            break
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            break
        names = [w for w in word.split("|") if w in sub.choices]
        if not names:
            return None
        parsers = [sub.choices[n] for n in names]
        if len(parsers) > 1:  # open-session|close-session: what any of them takes
            return {o for p in parsers for a in p._actions for o in a.option_strings}
        parser = parsers[0]
    return {o for a in parser._actions for o in a.option_strings}


def _shown_commands() -> Iterator[tuple[str, list[str]]]:
    """Every ``unbroken`` command the docs show, with where: in command blocks, in the
    command-line summaries (blocks without a language) and in the prose's code spans."""
    for b in all_blocks():
        if b.lang in SHELL | {""}:
            for words in _commands(b.text):
                yield b.where, words
    for doc in DOCS:
        prose = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for span in re.findall(r"`(unbroken [^`]+)`", prose.replace("\n", " ")):
            for words in _commands(span):
                yield str(doc.relative_to(ROOT)), words


def test_every_option_the_docs_show_exists() -> None:
    """Every ``--option`` of every ``unbroken`` command the docs show is one that command
    takes, and every command exists."""
    wrong = []
    for where, words in _shown_commands():
        known = _options(words)
        if known is None:
            wrong.append(f"{where}: no command `unbroken {' '.join(words[:2])}`")
            continue
        for w in words:
            option = w.strip("[]").split("=")[0]
            if option.startswith("--") and option not in known:
                wrong.append(f"{where}: `unbroken {' '.join(words[:2])}` has no {option}")
    assert not wrong, "\n".join(wrong)


def _doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def test_the_evidence_format_documents_every_entry_kind() -> None:
    """The payload table lists exactly the kinds an entry may have, and each has its body
    described (a section of its own, or a bullet under "Other bodies")."""
    text = _doc("evidence-format.md")
    row = next(line for line in text.splitlines() if line.startswith("| `kind` |"))
    assert set(re.findall(r"`([a-z_]+)`", row.split("|")[2])) == set(KINDS)
    described = [k for k in KINDS if f"### `{k}`" in text or f"- `{k}`:" in text]
    assert sorted(KINDS - set(described)) == []


def test_the_evidence_directory_layout_is_the_code_s() -> None:
    """Every place the device's code names in its data directory is in the layout."""
    text = _doc("evidence-format.md")
    places = [PUBKEY, CHAIN, SEGMENTS, SPOOL, PRIVATE, KEYS, PROVISION, STATUS, IDENTITY]
    places += [DEVICE_TOML, ASSIGNMENT, "journal.db", "officers.json"]
    missing = [p for p in places if f"DIR/{p}" not in text]
    assert not missing, missing


def test_the_acl_table_is_the_broker_s() -> None:
    """Every topic filter of the ACL the agency writes is in provisioning.md's table, with
    the table's names for the clients: <id> a device, store-<name>, R a room."""
    acl = render_acl(["store-main"], ["101"], [("room-1", "101")], revoked=["bwc-gone"])
    text = _doc("provisioning.md")
    table = text[text.index("| client (certificate CN) |") : text.index("**Regenerate")]
    filters = {
        line.split()[-1] for line in acl.splitlines() if line.startswith(("topic", "pattern"))
    }
    named = {f.replace("%u", "<id>").replace("store-main", "store-<name>") for f in filters}
    named = {f.replace("/101/", "/R/") for f in named}
    missing = sorted(f for f in named if f"`{f}`" not in table and f"deny {f}" not in table)
    assert not missing, missing


def test_the_sync_figures_are_the_code_s() -> None:
    """What the README and the protocol say travels whole, and in what chunks otherwise."""
    whole = f"{WHOLE_LIMIT // 2**20} MiB"
    chunk = f"{Sync().chunk_size // 1024} KiB"
    for text in (README, _doc("protocol.md")):
        assert whole in text and chunk in text


# -- slow: every command block runs -------------------------------------------------------


_PLACE = re.compile(rf"(?<![\w.])({'|'.join(map(re.escape, PLACES))})(?=/|\b)")


def _localised(text: str, root: Path, port: str) -> str:
    text = re.sub(r"(?<![\w/$])AGENCY\b", AGENCY, text)
    text = _PLACE.sub(lambda m: f"{root}{m.group(1)}", text)  # one pass: root is in /tmp
    return re.sub(rf"\b{PORT}\b", port, text)


def script(doc: Path, root: Path, progress: Path, port: str) -> str:
    """One shell script of the document's blocks, each announcing itself on fd 3."""
    out = [
        "set -eu -o pipefail",
        f"exec 3>>{shlex.quote(str(progress))}",
        # stop what the blocks left running: SIGTERM, which agents and stores obey
        "trap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT",
    ]
    for n, b in enumerate(blocks(doc)):
        if b.mark and b.mark[0] == "file":
            path = Path(_localised(b.mark[1], root, port))
            body = _localised(b.text, root, port)
            out += [
                f"echo {n} >&3",
                f"mkdir -p {shlex.quote(str(path.parent))}",
                f"cat > {shlex.quote(str(path))} <<'UNBROKEN_DOC_EOF'",
                body.rstrip("\n"),
                "UNBROKEN_DOC_EOF",
            ]
        elif b.lang in SHELL and b.mark is None:
            out += [f"echo {n} >&3", _localised(b.text, root, port)]
    return "\n".join(out) + "\n"


def _runnable(doc: Path) -> bool:
    return any(b.lang in SHELL and b.mark is None for b in blocks(doc))


@dataclass(frozen=True)
class Run:
    returncode: int  # -1: killed after the time allowed
    failed: Block | None  # the block running when the shell stopped, if it failed
    output: str


def run_doc(doc: Path, seconds: float = DOC_SECONDS) -> Run:
    """Run the document's command blocks, in order, in a fresh directory; what a block
    leaves running in the background is stopped when the last one has run."""
    # a short root: the docs' Unix sockets (agent run --control) must fit in 108 bytes
    root = Path(tempfile.mkdtemp(prefix="ubdoc-"))
    try:
        (root / "work").mkdir()
        for name in CLONE:  # the work directory stands for a clone after `make`
            (root / "work" / name).symlink_to(ROOT / name)
        for place in PLACES:
            (root / place.lstrip("/")).mkdir(parents=True, exist_ok=True)
        progress = root / "progress"
        progress.touch()
        text = script(doc, root, progress, str(free_port()))
        env = {
            **os.environ,
            "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/sbin:{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("UNBROKEN_AGENCY", None)
        proc = subprocess.Popen(
            ["bash", "-c", text],
            cwd=root / "work",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: all it started ends with it
        )
        try:
            output, _ = proc.communicate(timeout=seconds)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            returncode = -1
        finally:
            with contextlib.suppress(ProcessLookupError):  # anything a block left behind
                os.killpg(proc.pid, signal.SIGKILL)
        ran = progress.read_text().split()
        failed = blocks(doc)[int(ran[-1])] if returncode != 0 and ran else None
        return Run(returncode, failed, output)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_failing_block_fails_the_run_and_is_named(tmp_path: Path) -> None:
    """The runner itself: blocks run in order in one shell, a marked block is skipped, a
    file block is written, the first failing command stops the run naming its block, and
    what runs in the background is stopped at the end."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```sh\necho one > one.txt\nsleep 600 &\n```\n\n"
        "<!-- not run: it would fail -->\n```sh\nexit 9\n```\n\n"
        "<!-- file: /etc/unbroken/two.txt -->\n```\ntwo\n```\n\n"
        "```sh\ntest -f one.txt && grep -q two /etc/unbroken/two.txt\nfalse\necho three\n```\n\n"
        "```sh\necho never\n```\n",
        encoding="utf-8",
    )
    run = run_doc(doc, seconds=60)
    assert run.returncode == 1, run.output  # not 9 (skipped), not -1 (the sleep stopped)
    assert run.failed is not None and run.failed.text.startswith("test -f one.txt")
    assert "three" not in run.output and "never" not in run.output


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if _runnable(d)], ids=_doc_id)
def test_every_command_block_runs(doc: Path) -> None:
    """The document's command blocks, in order, in a fresh directory: each must succeed."""
    run = run_doc(doc)
    print(run.output)  # shown with -rP: what the docs' commands said
    if run.returncode != 0:
        where = (
            f"{run.failed.where}:\n{run.failed.text}" if run.failed else "before the first block"
        )
        pytest.fail(
            f"exit {run.returncode} in the block at {where}\n--- output ---\n{run.output[-4000:]}"
        )
