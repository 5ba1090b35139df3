"""Language-model unlearning: gradient ascent, GradDiff and NPO through a merged LoRA adapter.

Importing this package registers the methods ``gradient_ascent``, ``grad_diff`` and ``npo`` in
:data:`workers.unlearning.registry.METHODS` (guarantee class ``approximate``). Each takes a
transformers causal LM and LM batches (:func:`workers.unlearning.lm.data.lm_batches`) and
returns a new plain transformers model plus an ``UnlearningResult``.

Adding a method
---------------
1. A module here with a config dataclass extending ``LMUnlearningConfig`` (or a sibling's config);
   new fields get defaults and range checks in ``validate`` (raise ``ConfigError``).
2. A class extending ``LMUnlearningMethod`` (or ``GradDiff`` to keep its retain term) with
   ``name``, ``config_class`` and ``loss`` (or ``forget_loss``), decorated with
   ``@register_method("<name>")``.
3. Import it below and add a row to ``METHOD_CASES`` in
   ``tests/workers/unlearning/lm/test_methods.py``; the shared checks then run on it.
4. Add ``"<name>": LANGUAGE_MODELING`` to ``APPROXIMATE_METHODS`` in
   ``workers/unlearning/catalogue.py`` (policies are checked against it when saved).
"""

from workers.unlearning.lm.data import LMBatch, batch_texts, lm_batches
from workers.unlearning.lm.grad_diff import GradDiff, GradDiffConfig
from workers.unlearning.lm.gradient_ascent import GradientAscent, GradientAscentConfig
from workers.unlearning.lm.loop import LMUnlearningConfig, LMUnlearningMethod
from workers.unlearning.lm.losses import average_token_nll
from workers.unlearning.lm.npo import NPO, NPOConfig

__all__ = [
    "NPO",
    "GradDiff",
    "GradDiffConfig",
    "GradientAscent",
    "GradientAscentConfig",
    "LMBatch",
    "LMUnlearningConfig",
    "LMUnlearningMethod",
    "NPOConfig",
    "average_token_nll",
    "batch_texts",
    "lm_batches",
]
