"""Benchmarks: the end-to-end harness, the component benchmarks, the demo and the simulated
model. The ``tokenlean bench`` commands are a thin surface over this package.

The harness's ports are public: :class:`BenchModel` (and :class:`BatchBenchModel`) to drive it
with a real model, :class:`Variant` to run another combination of levers.

Example:
    >>> from tokenlean.bench import VARIANTS, Variant, generate_workload, run_harness
    >>> from tokenlean.testing import HashingEmbedder
    >>> [v.name for v in VARIANTS]
    ['baseline', 'cached', 'summarized_retrieved', 'all_levers']
    >>> plan_only = Variant("plan_only", volatile="move")
    >>> result = run_harness(generate_workload(users=1, sessions_per_user=1),
    ...                      embedder=HashingEmbedder(64), variants=["baseline", plan_only])
    >>> list(result["variants"])
    ['baseline', 'plan_only']
"""

from tokenlean.bench._harness import run_harness
from tokenlean.bench._model import (
    MAIN_MODEL,
    SMALL_MODEL,
    BatchBenchModel,
    BenchModel,
    BenchReply,
    SimulatedModel,
)
from tokenlean.bench._variants import VARIANTS, Variant
from tokenlean.bench._workload import Question, Session, Workload, generate_workload

__all__ = [
    "MAIN_MODEL",
    "SMALL_MODEL",
    "VARIANTS",
    "BatchBenchModel",
    "BenchModel",
    "BenchReply",
    "Question",
    "Session",
    "SimulatedModel",
    "Variant",
    "Workload",
    "generate_workload",
    "run_harness",
]
