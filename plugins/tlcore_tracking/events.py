"""TensorBoard event files, written with the ``tensorboard`` package's own record format and
protocol buffers: no TensorFlow, no torch.

An event file is a sequence of records (length, masked CRC-32C, a serialised ``Event``,
masked CRC-32C), opening with a ``file_version`` event. Records are appended whole and the
file closed after each epoch, so a run stopped at any point leaves a file TensorBoard reads.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

FILE_VERSION = "brain.Event:2"


def new_file(folder: Path) -> Path:
    """A new event file in ``folder`` (created), opened by a ``file_version`` event.

    Its name sorts by creation time and holds the host and process, as TensorBoard's own
    writers name theirs: a resumed run writes a second file, read after the first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.tlcore"
    path = folder / name
    append(path, [event_pb2.Event(wall_time=time.time(), file_version=FILE_VERSION)])
    return path


def scalars(values: dict[str, float], step: int) -> Any:
    """One event holding every value of ``values`` as a scalar named by its key, at ``step``."""
    value = summary_pb2.Summary.Value
    summary = summary_pb2.Summary(
        value=[value(tag=tag, simple_value=float(v)) for tag, v in values.items()]
    )
    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)


def text(tag: str, markdown: str, step: int) -> Any:
    """One event holding ``markdown`` for TensorBoard's text dashboard, under ``tag``."""
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[markdown.encode("utf-8")]
    )
    value = summary_pb2.Summary.Value(
        tag=tag,
        metadata=text_metadata.create_summary_metadata(display_name=tag, description=""),
        tensor=tensor,
    )
    summary = summary_pb2.Summary(value=[value])
    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)


def append(path: Path, events: list[Any]) -> None:
    """Append ``events`` to the event file at ``path`` as whole records, then flush."""
    with open(path, "ab") as file:
        writer = RecordWriter(file)
        for event in events:
            writer.write(event.SerializeToString())
        file.flush()
