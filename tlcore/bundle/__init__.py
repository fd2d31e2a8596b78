"""The bundle: what a run ships, and the checks that let it vouch for itself.

- :mod:`~tlcore.bundle.layout`: file names, graph names, metadata keys, schema version and
  checksums;
- :mod:`~tlcore.bundle.read`: a bundle opened with every check (the runtime's reader);
- :mod:`~tlcore.bundle.graph`: a backend's raw ONNX graph finished and written;
- :mod:`~tlcore.bundle.parity`: onnxruntime checked against the framework;
- :mod:`~tlcore.bundle.quantize`: the int8 model and its accuracy check;
- :mod:`~tlcore.bundle.export`: ``tl export`` on a finished run.
"""
