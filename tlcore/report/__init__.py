"""Reports on a model: ``tl eval`` (:mod:`~tlcore.report.evaluate`), its page ``report.html``
(:mod:`~tlcore.report.html`) with a classifier's calibration (:mod:`~tlcore.report.calibration`)
and confident mistakes (:mod:`~tlcore.report.mistakes`), and the figures of a run and of an
evaluation (:mod:`~tlcore.report.plots`)."""
