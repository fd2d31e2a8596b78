"""The training driver: :class:`~tlcore.train.trainer.Trainer` runs one recipe into one run folder.

- :mod:`~tlcore.train.trainer`: stages, epochs, early stopping, checkpoints, resume;
- :mod:`~tlcore.train.feed`: batches of cached features or decoded images;
- :mod:`~tlcore.train.stages`: the stages a run trains and their seeds;
- :mod:`~tlcore.train.guards`: a NaN or infinite loss, output or weight stops the run;
- :mod:`~tlcore.train.finish`: the end of a run (final checks, bundle, exports).
"""

from __future__ import annotations

from tlcore.train.trainer import Trainer, TrainResult

__all__ = ["TrainResult", "Trainer"]
