"""Whole runs on texts and vectors, through ``tlcore.fit`` and the CLI, on both backends: the
bundle (tokenizer shipped and checked, the strings-in model, embeddings), ``tl predict`` on
strings equal to the native model, ``tl embed`` equal to the native features, and the
logistic-regression head."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import tlcore
from tlcore.cli import cli

from .text_models import save_text_model

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

HAM = ["Re: meeting moved to Thursday at ten, see the agenda attached",
       "Lunch tomorrow? The new place near the station is open again",
       "Minutes of the committee: budget approved, next review in May",
       "Can you send me the slides from yesterday's talk on compilers",
       "Reminder: the library closes early on Friday for inventory",
       "Thanks for the review, I fixed the typo in section three",
       "The build is green again after the dependency update",
       "Our reading group meets in room 204 this week",
       "Please find the signed contract in the shared folder",
       "Happy birthday! Cake in the kitchen at four"]
SPAM = ["WIN a FREE cruise now!!! Click here to claim your prize",
        "Cheap meds online, no prescription needed, order today",
        "You have been selected for a $1000 gift card, act fast",
        "Lose 20 pounds in two weeks with this one secret trick",
        "Make money from home, earn $5000 a week guaranteed",
        "Your account is suspended, verify your password here now",
        "Lowest mortgage rates ever, refinance today and save big",
        "Hot singles in your area are waiting, click to chat",
        "Congratulations winner! Claim your lottery millions now",
        "Limited offer: designer watches 90% off, buy now"]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A tiny BERT (2 layers, hidden 32) with all-MiniLM-L6-v2's real tokenizer."""
    return save_text_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    for name, texts in (("ham", HAM), ("spam", SPAM)):
        (root / name).mkdir()
        for i, text in enumerate(texts):
            (root / name / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    return root


def text_recipe(model) -> dict:
    return {
        "backbone": {"source": f"hf:{model}", "input_size": 24},
        "data": {"val_split": 0.3},
        "train": {"batch_size": 4, "stages": [
            {"name": "head", "epochs": 2, "lr": 1e-2, "freeze": {"policy": "all"}},
            {"name": "fine_tune", "epochs": 1, "lr": 1e-4,
             "freeze": {"policy": "last_n", "n": 1}},
        ]},
    }


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_text_run_ships_its_tokenizer_and_predicts_strings_framework_free(
    backend, text_model, text_folder, tmp_path
):
    result = tlcore.fit(recipe=text_recipe(text_model), data=None, out=tmp_path / "run",
                        backend=backend, quiet=True, overrides={"data.path": str(text_folder)})
    run = result.path
    info = json.loads((run / "tlcore.json").read_text())
    assert info["input"]["modality"] == "text"
    assert info["input"]["tokenizer"] == "tokenizer.json"
    assert (run / "tokenizer.json").read_bytes() == (text_model / "tokenizer.json").read_bytes()
    assert info["onnx"]["parity"]["embeddings_max_diff"] <= 1e-3
    strings = info["strings"]
    assert strings["tokenizer_parity"]["checked"] == 6  # the validation texts
    # Checked in a fresh process after a Keras run: TensorFlow's RE2 breaks the extensions'.
    assert strings["written"], strings
    assert strings["tokenizer_parity"]["ok"]

    # tl predict on strings: the classes the native model gives.
    texts = [HAM[0], SPAM[0], "a sentence the model never saw"]
    out = CliRunner().invoke(cli, ["predict", str(run), *texts, "--json"])
    assert out.exit_code == 0, out.output
    predicted = [row["label"] for row in json.loads(out.stdout)]
    from tlcore.inputs.text import encode
    from tlcore.interfaces import Batch
    from tlcore.plugins.calls import BackendCalls

    ids = encode(texts, result.preprocessing.preprocessing)
    logits = BackendCalls(backend).eval_step(result.model, Batch(ids, np.zeros(3, np.int64)))
    assert predicted == [result.class_names[i] for i in logits.argmax(axis=1)]

    # The strings model gives model.onnx's probabilities on raw strings.
    import sys

    from tlcore.bundle.strings import session
    from tlcore.runtime import Predictor

    # In-process only where onnxruntime-extensions ran before TensorFlow came (its RE2).
    from . import conftest

    if strings["written"] and ("tensorflow" not in sys.modules
                               or conftest.EXTENSIONS_BEFORE_TENSORFLOW):
        strings_session = session(run / "model.strings.onnx")
        got = strings_session.run(["probabilities"], {"texts": np.array(texts, dtype=object)})
        np.testing.assert_allclose(got[0], Predictor(run, model="model.onnx").outputs(ids),
                                   atol=1e-5)

    # A changed tokenizer is refused by the runtime.
    (run / "tokenizer.json").write_text((run / "tokenizer.json").read_text() + " ")
    with pytest.raises(tlcore.TlcoreError, match="sha256"):
        Predictor(run)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_vectors_train_an_mlp_standardised_and_embed_as_the_native_model(backend, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[:400] * 10.0 + 3.0).astype(np.float32)  # far from standardised
    y = digits.target[:400]
    np.savez(tmp_path / "digits.npz", x=x, y=y)
    result = tlcore.fit(
        recipe={"backbone": {"widths": [32]}, "data": {"val_split": 0.25},
                "train": {"stages": [{"name": "all", "epochs": 8, "lr": 3e-3,
                                      "freeze": {"policy": "none"}}]}},
        out=tmp_path / "run", backend=backend, quiet=True,
        overrides={"data.path": str(tmp_path / "digits.npz")},
    )
    assert result.recipe.backbone.source == "builtin:mlp"
    assert result.recipe.backbone.input_features == 64
    assert result.metrics["val_accuracy"] > 0.8
    info = json.loads((result.path / "tlcore.json").read_text())
    assert info["input"]["modality"] == "vector"
    mean, std = np.array(info["input"]["mean"]), np.array(info["input"]["std"])
    assert mean.shape == (64,) and (std > 0).all()  # the training split's, not x's own
    assert np.abs(mean - x.mean(axis=0)).max() < 0.25 * x.std(axis=0).max()
    runner = CliRunner()
    out = runner.invoke(cli, ["embed", str(result.path), str(tmp_path / "digits.npz"),
                              "--out", str(tmp_path / "bundle.npz")])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["embed", str(result.path), str(tmp_path / "digits.npz"),
                              "--out", str(tmp_path / "native.npz"), "--native"])
    assert out.exit_code == 0, out.output
    bundle, native = np.load(tmp_path / "bundle.npz"), np.load(tmp_path / "native.npz")
    assert bundle["embeddings"].shape == (400, 32)
    np.testing.assert_allclose(bundle["embeddings"], native["embeddings"], rtol=1e-4, atol=1e-4)
    assert list(bundle["labels"][:3]) == [str(v) for v in y[:3]]


def test_a_table_with_its_own_columns_is_read_alike_by_eval_and_embed(text_model, tmp_path):
    """A run trained on a table's ``body`` and ``category`` columns reads tables given to it
    later (tl eval, tl embed) by the same columns, from its recorded recipe."""
    import csv

    table = tmp_path / "mails.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "body"])
        writer.writerows([("ham", t) for t in HAM] + [("spam", t) for t in SPAM])
    recipe = {**text_recipe(text_model), "data": {"path": str(table), "text_column": "body",
                                                  "label_column": "category", "val_split": 0.0}}
    recipe["train"] = {"batch_size": 4, "stages": [{"name": "head", "epochs": 1,
                                                    "freeze": {"policy": "all"}}]}
    run = tlcore.fit(recipe=recipe, backend="torch", out=tmp_path / "run", quiet=True).path
    runner = CliRunner()
    out = runner.invoke(cli, ["eval", str(run), str(table), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["count"] == len(HAM) + len(SPAM)
    out = runner.invoke(cli, ["eval", str(run), str(table), "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0 and f"on {len(HAM) + len(SPAM)} texts" in out.output, out.output
    out = runner.invoke(cli, ["embed", str(run), str(table), "--out", str(tmp_path / "e.npz")])
    assert out.exit_code == 0, out.output
    assert sorted(set(np.load(tmp_path / "e.npz")["labels"])) == ["ham", "spam"]


@pytest.mark.parametrize(("standardize", "expected"), [(None, False), (True, True)])
def test_a_network_with_its_own_weights_takes_vectors_as_they_come(tmp_path, standardize,
                                                                    expected):
    """A user's network is trained on the numbers it was given: by default tlcore hands it
    the same numbers; data.standardize: true standardises anyway."""
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU())
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 6)) * 4 + 9).astype(np.float32)
    y = (x[:, 0] > 9).astype(np.int64)
    result = tlcore.fit(
        (x, y), backbone=network, backend="torch", out=tmp_path / "run", quiet=True,
        recipe={"data": {"val_split": 0.0, "standardize": standardize},
                "train": {"stages": [{"name": "head", "epochs": 1}]}},
    )
    mean = np.array(json.loads((result.path / "tlcore.json").read_text())["input"]["mean"])
    assert bool(np.abs(mean - x.mean(axis=0)).max() < 1e-4) == expected
    assert bool(mean.any()) == expected


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_logistic_stage_fits_the_head_and_exports_it(backend, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data[:300].astype(np.float32), digits.target[:300]
    result = tlcore.fit(
        recipe={"backbone": {"widths": [48]}, "data": {"val_split": 0.25},
                "train": {"stages": [{"name": "head", "optimizer": "logistic", "epochs": 3,
                                      "freeze": {"policy": "all"}}]}},
        data=(x, y), out=tmp_path / "run", backend=backend, quiet=True,
    )
    (row,) = result.history  # one fit, however many epochs were asked
    assert row["C"] > 0 and row["accuracy"] > 0.8
    assert result.metrics["val_accuracy"] > 0.75
    info = json.loads((result.path / "tlcore.json").read_text())
    assert info["onnx"]["parity"]["agreement"] == 1.0


def test_a_logistic_stage_refuses_a_backbone_that_trains(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 2
    with pytest.raises(tlcore.RecipeError, match="cached features"):
        tlcore.fit(
            recipe={"train": {"stages": [{"optimizer": "logistic",
                                          "freeze": {"policy": "none"}}]}},
            data=(x, y), out=tmp_path / "run", backend="torch", quiet=True,
        )
