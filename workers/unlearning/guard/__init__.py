"""The inference-time verifier guard (guarantee class ``suppressed``).

The weights still hold the data; each response is checked by a verifier and regenerated or
redacted when it reveals a forgotten record. Its threshold is calibrated by Learn-then-Test so the
guard can state a leak-rate bound (alpha, delta, n) and refuses to state one it cannot support.

Importing this package registers ``verifier_guard`` in
:data:`workers.unlearning.base.METHODS`. The statistics (:mod:`.stats`) and the verifier
(:mod:`.verifier`) import neither torch nor transformers.

Modules: ``stats`` (binomial p-value, Clopper-Pearson, minimum n), ``verifier`` (verifier and
oracle), ``generators`` (what is wrapped), ``guarded`` (the guard), ``calibration``
(Learn-then-Test), ``method`` (the registered method).
"""

from workers.unlearning.guard.calibration import (
    DEFAULT_THRESHOLDS,
    GuardCalibration,
    ThresholdTest,
    calibrate_guard,
)
from workers.unlearning.guard.generators import HFGenerator, as_generator, parameters_fingerprint
from workers.unlearning.guard.guarded import REDACTION, GuardedGenerator, GuardedResponse
from workers.unlearning.guard.method import GuardNotCertified, VerifierGuard, VerifierGuardConfig
from workers.unlearning.guard.stats import (
    binomial_p_value,
    clopper_pearson_upper,
    minimum_calibration_size,
)
from workers.unlearning.guard.verifier import FactOracle, LeakVerifier, VerifierScore

__all__ = [
    "DEFAULT_THRESHOLDS",
    "REDACTION",
    "FactOracle",
    "GuardCalibration",
    "GuardNotCertified",
    "GuardedGenerator",
    "GuardedResponse",
    "HFGenerator",
    "LeakVerifier",
    "ThresholdTest",
    "VerifierGuard",
    "VerifierGuardConfig",
    "VerifierScore",
    "as_generator",
    "binomial_p_value",
    "calibrate_guard",
    "clopper_pearson_upper",
    "minimum_calibration_size",
    "parameters_fingerprint",
]
