"""Reports on a model: ``tl eval`` (:mod:`~tlcore.report.evaluate`) and the figures of a run
and of an evaluation (:mod:`~tlcore.report.plots`)."""
