"""Language-model unlearning: gradient ascent, GradDiff and NPO through a merged LoRA adapter, and
MRP through projections of hidden states (weights unchanged), and fact-lookup localised unlearning
(only the MLPs that fact-lookup localisation selects are trained).

Importing this package registers the methods ``gradient_ascent``, ``grad_diff``, ``npo``, ``mrp`` and
``fact_lookup`` in
:data:`workers.unlearning.base.METHODS` (their declarations in
``workers/unlearning/catalogue.py`` give the guarantee class, ``approximate``). Each takes a
transformers causal LM and LM batches (:func:`workers.unlearning.lm.data.lm_batches`) and
returns a new plain transformers model plus an ``UnlearningResult``.

To add a method, follow ``workers/unlearning/ADDING_A_METHOD.md``.
"""

from workers.unlearning.lm.data import LMBatch, batch_texts, lm_batches
from workers.unlearning.lm.fact_lookup import FactLookupConfig, FactLookupUnlearning
from workers.unlearning.lm.grad_diff import GradDiff, GradDiffConfig
from workers.unlearning.lm.gradient_ascent import GradientAscent, GradientAscentConfig
from workers.unlearning.lm.loop import LMUnlearningConfig, LMUnlearningMethod
from workers.unlearning.lm.losses import average_token_nll
from workers.unlearning.lm.mrp import MRP, MRPConfig
from workers.unlearning.lm.npo import NPO, NPOConfig

__all__ = [
    "MRP",
    "NPO",
    "FactLookupConfig",
    "FactLookupUnlearning",
    "GradDiff",
    "GradDiffConfig",
    "GradientAscent",
    "GradientAscentConfig",
    "LMBatch",
    "LMUnlearningConfig",
    "LMUnlearningMethod",
    "MRPConfig",
    "NPOConfig",
    "average_token_nll",
    "batch_texts",
    "lm_batches",
]
