"""A third-party tlcore plugin: the export format ``npzweights`` (every weight of the model,
as the backend gives them, in one ``model_weights.npz``), for any backend."""

import tlcore
from tlcore.interfaces import Choice

FORMAT = "npzweights"
FILE = "model_weights.npz"


@tlcore.hookimpl
def tl_register_choices(register):
    register(Choice("format", FORMAT, "every weight in one .npz file"))


@tlcore.hookimpl
def tl_export(backend, model, fmt, path):
    if fmt != FORMAT:
        return None
    from tlcore.files import write_arrays
    from tlcore.plugins.calls import BackendCalls

    write_arrays(path / FILE, BackendCalls(backend).get_weights(model))
    return path / FILE
