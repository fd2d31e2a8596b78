"""Experiment tracking for tlcore runs: TensorBoard and MLflow, as two observer plugins.

Both are built on the event hooks (``tl_on_epoch_end``, ``tl_on_stage_end``, ``tl_on_export``)
and registered through the ``tlcore`` entry-point group, exactly as a third party's logger
would be; ``tl plugins`` lists them as ``tensorboard`` and ``mlflow``.

- :mod:`tlcore_tracking.tensorboard_logger` writes the scalars of every epoch into
  ``RUN/tensorboard/`` whenever the ``tensorboard`` package is installed (``tlcore[tensorboard]``):
  inside the run folder, so nothing appears anywhere else.
- :mod:`tlcore_tracking.mlflow_logger` logs to MLflow only when ``MLFLOW_TRACKING_URI`` is set
  (MLflow's own convention), so installing ``tlcore[mlflow]`` never creates an ``mlruns/``
  folder by surprise.

Importing this package (``tl plugins`` does) imports neither library: each is imported when
its logger first has something to write. A logger that fails warns once
(:class:`~tlcore_tracking.common.TrackingWarning`) and stays quiet for the rest of that run;
the training goes on.
"""
