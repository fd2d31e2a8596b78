"""The stages a run trains and the seeds of their epochs.
"""

from __future__ import annotations

import numpy as np

from tlcore.diagnose import (
    random_backbone_warnings,
)
from tlcore.recipe import (
    StageSpec,
    follows_default_stages,
    scratch_stage,
)


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from the recipe seed, the stage and the epoch: resumable randomness."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def plan_stages(
    stages: tuple[StageSpec, ...], pretrained: bool
) -> tuple[tuple[StageSpec, ...], list[str]]:
    """The stages a run trains, and the warnings they deserve.

    A pretrained backbone keeps ``stages``. A randomly initialised one trains from scratch:
    the default two stages (up to ``epochs`` and ``lr``) become :func:`scratch_stage`; the
    user's own stages stay, with a warning where they freeze it.
    """
    if pretrained:
        return stages, []
    if follows_default_stages(stages):
        return (scratch_stage(stages),), []
    return stages, random_backbone_warnings(stages)
