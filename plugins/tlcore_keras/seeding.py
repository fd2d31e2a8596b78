"""Seeding Keras, TensorFlow, numpy and Python for a run, without retracing compiled steps."""

from __future__ import annotations

import keras
import numpy as np

from tlcore_keras.model import live_models


def seed(value: int) -> None:
    """Seed Keras, TensorFlow, numpy and Python, and restart the dropout generators of every
    live model from ``value`` (so a resumed run draws the masks an uninterrupted one draws).

    TensorFlow's global seed is set only while no model is live: it is part of every
    ``tf.function``'s tracing context, so setting it again retraces each compiled step (seconds
    per epoch for a MobileNetV2, see ``benchmarks/``), and nothing a live model runs draws from
    it (Keras 3 layers draw from their own seed generators, restarted here).
    """
    models = list(live_models())
    if not models:
        keras.utils.set_random_seed(value)
        return
    _seed_keras_numpy_python(value)
    for model in models:
        model.reseed(value)


def _seed_keras_numpy_python(value: int) -> None:
    """``keras.utils.set_random_seed`` without its ``tf.random.set_seed``."""
    import random

    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    global_state.set_global_attribute("global_random_seed", value)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(value)
    np.random.seed(value)
