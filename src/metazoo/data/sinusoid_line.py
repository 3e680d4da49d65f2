"""The sine-or-line regression family (PLATIPUS Sec. 5.1): the dataset's entry.

Finn, Xu, Levine. "Probabilistic Model-Agnostic Meta-Learning". NeurIPS 2018. arXiv:1806.02817.

No stored examples: `metazoo.tasks.SinusoidLineTasks` (the layer above) draws each task, a noisy
sine wave or a noisy line with equal probability, so this spec has no loader.
"""

from __future__ import annotations

from metazoo.data.base import DatasetSpec

SPEC = DatasetSpec("sinusoid_line", None, "regression", ("train", "val", "test"),
                   "ambiguous regression: noisy sine or line, p=1/2 each (PLATIPUS Sec. 5.1)",
                   False)
