"""Reading a bundle back, checked: the model file, its ``tlcore.json`` and their agreement.

``model.onnx`` is the single source of its labels, input spec and task: its metadata, written
by :mod:`tlcore.bundle.graph`. ``tlcore.json`` describes the bundle and records the sha256 of
each model file. :func:`open_bundle` uses a model only when

- its metadata is complete and fits its graph: the input it names, one output per label, a
  multi-label threshold per label;
- the ``tlcore.json`` beside it, when there is one, is valid JSON, records the model's sha256
  (and the file matches it), and names the same labels, input and task as the model;
- a model in a run folder (``run.json`` beside it) has its ``tlcore.json``: deleting that file
  is no way around the checksum. A model anywhere else (a bare ``.onnx`` file copied out, a
  deployment folder) is used on its own metadata, checked against its graph.

The checksum detects a damaged or edited file; it is not a signature: whoever can change the
model can change ``tlcore.json`` too. Runtime side: this module imports the layout, errors,
interfaces and tasks only, and onnxruntime when a bundle is opened.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore import __version__
from tlcore.bundle.layout import (
    INFO_FILE,
    META_INPUT,
    META_LABELS,
    META_SCHEMA,
    META_TASK,
    MODEL_FILE,
    RUN_FILE,
    SCHEMA_VERSION,
    file_sha256,
)
from tlcore.errors import TlcoreError
from tlcore.interfaces import InputSpec
from tlcore.tasks import DEFAULT_TASK, Task, task_from_bundle

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["Bundle", "Description", "describe_info", "describe_model", "differences",
           "open_bundle", "open_session", "read_info"]


@dataclass(frozen=True)
class Description:
    """What a model is: its labels (the output names, in order), its input and its task (the
    ``task`` section: ``{"name": ..., **what the task stored}``)."""

    labels: tuple[str, ...]
    input: InputSpec
    task: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The ``labels``, ``input`` and ``task`` sections of ``tlcore.json``."""
        return {"labels": list(self.labels), "input": self.input.to_dict(), "task": self.task}


@dataclass(frozen=True)
class Bundle:
    """A model that passed every check, open in onnxruntime (``session``): its ``tlcore.json``
    (``info``; empty for a model used on its metadata alone), its ``description`` from its
    metadata, its ``task`` and what the task stored (``task_info``: thresholds, scaling)."""

    model_file: Path
    info: dict[str, Any]
    description: Description
    task: Task
    task_info: dict[str, Any]
    session: onnxruntime.InferenceSession


def open_bundle(
    path: str | os.PathLike[str], model: str | None = None, threads: int | None = None
) -> Bundle:
    """Open a bundle folder's model (``model``, else its ``default_model``, else
    ``model.onnx``) or a ``.onnx`` file, after every check of the module docstring.

    Raises:
        TlcoreError: no model there; ``tlcore.json`` missing from a run folder, unreadable,
            or disagreeing with the model (names what disagrees); a checksum mismatch; a newer
            bundle schema; the model is not a tlcore model or its metadata does not fit it;
            onnxruntime is missing or cannot load it.
    """
    model_file, info_file, info = _locate(Path(path), model)
    if info_file is not None:
        _check_schema(info.get("schema_version"), info_file)
        _check_sha256(model_file, info, info_file)
    session = open_session(model_file, threads)
    meta = session.get_modelmeta().custom_metadata_map
    _check_schema(meta.get(META_SCHEMA), model_file)
    description = _from_metadata(meta, model_file)
    task, task_info = _task(description, model_file)
    _check_graph(description, task, session, model_file)
    if info_file is not None:
        _check_agreement(description, info, info_file, model_file)
    return Bundle(model_file, info, description, task, task_info, session)


def read_info(path: Path) -> dict[str, Any]:
    """A ``tlcore.json``, read; one :class:`TlcoreError` naming the file when it cannot be
    read, is not JSON, or not a JSON object."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TlcoreError.caused_by(
            f"cannot read the bundle description {path}", exc, _restore_hint(path.parent)
        ) from None
    if not isinstance(info, dict):
        raise TlcoreError(
            f"the bundle description {path} is not a JSON object", _restore_hint(path.parent)
        )
    return info


def describe_model(path: Path) -> Description:
    """What a model file's metadata says it is, without the bundle's checks (``tl export``
    compares it with the run it re-exports); a :class:`TlcoreError` when it is not a tlcore
    model, or its metadata is malformed or newer."""
    meta = open_session(path).get_modelmeta().custom_metadata_map
    _check_schema(meta.get(META_SCHEMA), path)
    return _from_metadata(meta, path)


def describe_info(info: dict[str, Any], info_file: Path) -> Description:
    """What a ``tlcore.json`` says the bundle's model is; a :class:`TlcoreError` when it
    records no labels or input, or records them in a wrong form."""
    return _description(info, str(info_file), _restore_hint(info_file))


def open_session(
    path: str | os.PathLike[str], threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session on ``path`` with every graph optimisation on.

    Raises:
        TlcoreError: onnxruntime is not installed or cannot load the file.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise TlcoreError(
            "onnxruntime is not installed; it runs the bundle's model.onnx",
            "pip install onnxruntime (or 'tlcore[onnx]')",
        ) from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: optimisation notes are not the user's concern
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types; all mean "cannot load"
        raise TlcoreError(
            f"onnxruntime cannot load {path}: {exc}", "is it a complete, valid ONNX file?"
        ) from None


def differences(ours: Description, theirs: Description, we: str, they: str) -> list[str]:
    """What two descriptions disagree on, one phrase each (empty when they agree): the
    labels (their count, else the first that differs), input fields, task fields."""
    found = []
    a, b = ours.labels, theirs.labels
    if len(a) != len(b):
        found.append(f"{we} has {_count(a)} {_some(a)}, {they} {_count(b)} {_some(b)}")
    elif a != b:
        at = next(i for i in range(len(a)) if a[i] != b[i])
        found.append(f"label {at} is {a[at]!r} in {we}, {b[at]!r} in {they}")
    for section, a, b in (
        ("input", ours.input.to_dict(), theirs.input.to_dict()),
        ("task", ours.task, theirs.task),
    ):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                found.append(
                    f"{section} {key} is {_short(a.get(key))} in {we}, {_short(b.get(key))} "
                    f"in {they}"
                )
    return found


def _locate(path: Path, name: str | None) -> tuple[Path, Path | None, dict[str, Any]]:
    """The model file, and the ``tlcore.json`` that vouches for it with its content (``None``
    and ``{}`` for a model used on its metadata alone)."""
    if path.is_file():
        folder, model = path.parent, path
    elif path.is_dir():
        folder, model = path, None
    else:
        raise TlcoreError(f"no bundle at {path}", "pass a run folder or a model.onnx file")
    info_file = folder / INFO_FILE
    info = read_info(info_file) if info_file.is_file() else None
    if model is None:
        chosen = name or (info or {}).get("default_model") or MODEL_FILE
        if not isinstance(chosen, str) or Path(chosen).name != chosen:
            raise TlcoreError(
                f"model {chosen!r} is not a file name inside the bundle",
                f"name a file in {folder}, e.g. {MODEL_FILE}",
            )
        model = folder / chosen
        if not model.is_file():
            raise TlcoreError(
                f"no {chosen} in {folder}",
                f"export it with 'tl export {folder}', or pass a folder that holds one",
            )
    if info is not None:
        return model, info_file, info
    if (folder / RUN_FILE).is_file():
        raise TlcoreError(
            f"{folder} is a run folder without its {INFO_FILE}, so {model.name} cannot be "
            "checked against the sha256 recorded when it was exported",
            f"restore {INFO_FILE} from a copy of the run, or write the bundle again with "
            f"'tl train --resume {folder}'",
        )
    return model, None, {}


def _check_schema(value: Any, where: Path) -> None:
    try:
        version = int(value) if value is not None else None
    except (TypeError, ValueError):
        raise TlcoreError(
            f"{where} has an invalid bundle schema version {value!r}", _restore_hint(where)
        ) from None
    if version is not None and version > SCHEMA_VERSION:
        raise TlcoreError(
            f"{where} uses bundle schema version {version}; tlcore {__version__} reads up to "
            f"version {SCHEMA_VERSION}",
            f"upgrade tlcore to a release that reads bundle schema version {version}",
        )


def _check_sha256(model: Path, info: dict[str, Any], info_file: Path) -> None:
    """Verify ``model`` (and its external data) against the ``tlcore.json`` section that
    records it: ``onnx`` for the float model, ``quantized`` for the int8 one."""
    sections = [info.get(key) for key in ("onnx", "quantized")]
    sections = [s for s in sections if isinstance(s, dict)]
    section = next((s for s in sections if s.get("file", MODEL_FILE) == model.name), {})
    if not isinstance(section.get("sha256"), str):
        raise TlcoreError(
            f"{info_file} records no sha256 of {model.name}, so {model} cannot be verified",
            f"export it again with 'tl export {model.parent}'",
        )
    files = {model: section["sha256"]}
    if section.get("data_sha256"):
        files[model.parent / str(section.get("data_file"))] = str(section["data_sha256"])
    for path, recorded in files.items():
        actual = file_sha256(path) if path.is_file() else "missing"
        if actual != recorded:
            raise TlcoreError(
                f"{path} does not match the sha256 recorded in {INFO_FILE} "
                f"(recorded {recorded[:12]}…, file {actual[:12]}…)",
                f"the file was changed or damaged after export: restore it, or export it "
                f"again with 'tl export {model.parent}'",
            )


def _from_metadata(meta: dict[str, str], model: Path) -> Description:
    """The model's own description; refused when incomplete or malformed."""
    missing = [key for key in (META_LABELS, META_INPUT) if key not in meta]
    if missing:
        raise TlcoreError(
            f"{model} is not a tlcore model (no {' / '.join(missing)} metadata)",
            "pass a model.onnx that tlcore exported, or its bundle folder",
        )
    parsed = {}
    for key, section in ((META_LABELS, "labels"), (META_INPUT, "input"), (META_TASK, "task")):
        try:
            parsed[section] = json.loads(meta[key]) if key in meta else None
        except json.JSONDecodeError as exc:
            raise TlcoreError.caused_by(
                f"the {key} metadata of {model} is not valid JSON", exc, _restore_hint(model)
            ) from None
    return _description(parsed, f"the metadata of {model}", _restore_hint(model))


def _description(source: dict[str, Any], where: str, hint: str) -> Description:
    """``labels``, ``input`` and ``task`` of ``source`` (``tlcore.json`` or the parsed
    metadata), each checked for its form; a missing task is a classifier (tlcore 0.1)."""
    labels = source.get("labels")
    if labels is None:
        raise TlcoreError(f"{where} records no labels", hint)
    names = isinstance(labels, list) and all(isinstance(label, str) for label in labels)
    if not names or not labels or len(set(labels)) != len(labels):
        raise TlcoreError(f"the labels in {where} are not a list of distinct names", hint)
    try:
        spec = InputSpec.from_dict(source["input"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = "records no input" if source.get("input") is None else "has an invalid input"
        raise TlcoreError.caused_by(f"{where} {what}", exc, hint) from None
    task = source.get("task")
    if task is None:
        task = {"name": DEFAULT_TASK}
    if not isinstance(task, dict) or not isinstance(task.get("name", DEFAULT_TASK), str):
        raise TlcoreError(f"the task in {where} is not a task section", hint)
    return Description(tuple(labels), spec, {"name": DEFAULT_TASK, **task})


def _task(description: Description, model: Path) -> tuple[Task, dict[str, Any]]:
    try:
        return task_from_bundle(description.task)
    except TlcoreError as exc:
        raise TlcoreError(
            f"{model} is a {description.task['name']!r} model, a task this tlcore does not "
            f"know ({exc.hint})",
            "install the plugin that provides the task, or a newer tlcore",
        ) from None


def _check_graph(
    description: Description, task: Task, session: onnxruntime.InferenceSession, model: Path
) -> None:
    """The metadata must describe the graph: its input, one output per label, one threshold
    per label."""
    spec, hint = description.input, _restore_hint(model)
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [spec.name] or not _fits(inputs[0].shape[1:], spec.shape):
        found = ", ".join(f"{i.name} {i.shape}" for i in inputs)
        raise TlcoreError(
            f"{model} takes {found}, not the input its metadata names ({spec.name} "
            f"{list(spec.shape)} per sample)",
            hint,
        )
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if task.output not in outputs:
        raise TlcoreError(f"{model} has no {task.output!r} output, which a {task.name} "
                          "model gives", hint)
    width, wanted = outputs[task.output][-1], task.num_outputs(description.labels)
    if isinstance(width, int) and width != wanted:
        raise TlcoreError(
            f"{model} gives {width} {task.output} per sample, but its metadata names "
            f"{_count(description.labels)} {_some(description.labels)}",
            hint,
        )
    cuts = description.task.get("thresholds")
    if cuts is not None and not (
        isinstance(cuts, list)
        and len(cuts) == wanted
        and all(isinstance(c, int | float) and math.isfinite(c) for c in cuts)
    ):
        raise TlcoreError(
            f"the thresholds in the metadata of {model} are not {wanted} finite numbers, one "
            "per label",
            hint,
        )


def _fits(shape: list[Any], spec: tuple[int, ...]) -> bool:
    """A graph's sample shape against the spec's; symbolic dimensions fit any size."""
    return len(shape) == len(spec) and all(
        not isinstance(d, int) or d == s for d, s in zip(shape, spec, strict=True)
    )


def _check_agreement(
    description: Description, info: dict[str, Any], info_file: Path, model: Path
) -> None:
    """``tlcore.json`` must say what the model says."""
    hint = _restore_hint(info_file)
    recorded = describe_info(info, info_file)
    found = differences(recorded, description, INFO_FILE, model.name)
    if found:
        raise TlcoreError(f"{info_file} does not agree with {model}: {'; '.join(found)}", hint)


def _restore_hint(where: Path) -> str:
    """What to do about a damaged or edited bundle: restore it, or write it again."""
    folder = where if where.is_dir() else where.parent
    run = (folder / RUN_FILE).is_file()
    again = f", or write it again with 'tl export {folder}'" if run else ""
    return f"the bundle was edited or damaged: restore it from its original copy{again}"


def _count(labels: tuple[str, ...]) -> str:
    return f"{len(labels)} label" + ("" if len(labels) == 1 else "s")


def _some(labels: tuple[str, ...], shown: int = 4) -> str:
    """A few labels, for a message: ``('cat', 'dog', …)``."""
    more = ", …" if len(labels) > shown else ""
    return "(" + ", ".join(repr(label) for label in labels[:shown]) + more + ")"


def _short(value: Any, limit: int = 60) -> str:
    text = "missing" if value is None else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
