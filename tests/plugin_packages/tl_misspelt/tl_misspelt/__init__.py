"""A plugin with a typo in a hook name: it must be reported, not silently ignored."""

import tlcore


@tlcore.hookimpl
def tl_load_backbon(backend, spec):
    return None
