"""onnxruntime's calibration data reader over a model's inputs, for static quantisation."""

from __future__ import annotations

import numpy as np

from tlcore.bundle.layout import INPUT


class Calibration:
    """onnxruntime's CalibrationDataReader protocol over model inputs: ``get_next``, and
    ``__len__`` and ``set_range`` (in batches) for strided calibration."""

    def __init__(self, images: np.ndarray, input_name: str = INPUT, batch: int = 16) -> None:
        self.images = images
        self.input_name = input_name
        self.batch = batch
        self.batches = -(-len(images) // self.batch)
        self.set_range(0, self.batches)

    def __len__(self) -> int:
        """Number of batches."""
        return self.batches

    def set_range(self, start_index: int, end_index: int) -> None:
        """Give batches ``start_index`` to ``end_index`` (exclusive) from now on."""
        self.next, self.end = start_index, min(end_index, self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as an input feed, or ``None`` when the range is done."""
        if self.next >= self.end:
            return None
        start = self.next * self.batch
        self.next += 1
        batch = self.images[start : start + self.batch]
        return {self.input_name: np.ascontiguousarray(batch)}

    def rewind(self) -> None:
        """Start again from the first image (some calibrators read the data twice)."""
        self.set_range(0, self.batches)
