"""Does a response reveal a forgotten record? The guard's verifier and the calibration's oracle.

* :class:`LeakVerifier` scores a response in ``[0, 1]`` against the forgotten texts: the larger of
  (a) the share of a forgotten text's character n-grams that appear in the response and (b) the
  TF-IDF cosine of their hashed character n-gram vectors. It keeps salted hashes of the n-grams,
  not the texts, so the guard does not become one more plain copy of the data it hides.
* :class:`FactOracle` labels a response as leaking when a forgotten fact appears in it exactly or
  nearly (difflib ratio over alphanumerics). It shares no code or representation with the
  verifier: the calibration needs leak labels that do not inherit the verifier's blind spots.

Plain Python (hashlib, difflib): no model download, no torch.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
import secrets
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_SPACES = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form both scores compare."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


@dataclass(frozen=True)
class VerifierScore:
    """A response's score (``max`` of both parts) and which forgotten text it is closest to."""

    score: float
    containment: float
    cosine: float
    record_index: int | None


class LeakVerifier:
    """Scores responses against forgotten texts; flag a response when ``score >= threshold``.

    In: the forgotten texts (at least one), the character n-gram sizes, and a salt (random when
    not given). ``score(text)`` returns a :class:`VerifierScore`.
    """

    def __init__(
        self,
        forgotten_texts: Sequence[str],
        *,
        ngram_min: int = 3,
        ngram_max: int = 5,
        salt: bytes | None = None,
    ) -> None:
        if not forgotten_texts:
            raise ValueError("the verifier needs at least one forgotten text")
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {ngram_min}, {ngram_max}")
        self.ngram_min, self.ngram_max = ngram_min, ngram_max
        self._salt = salt if salt is not None else secrets.token_bytes(16)
        grams = [self._grams(text) for text in forgotten_texts]
        if any(not g for g in grams):
            raise ValueError(f"every forgotten text needs at least {ngram_max} characters")
        # IDF over the forgotten set: n-grams every record shares (a template) weigh least.
        document_frequency = Counter(g for counts in grams for g in counts)
        total = len(grams)
        self._idf = {
            g: math.log((1 + total) / (1 + df)) + 1.0 for g, df in document_frequency.items()
        }
        self._records = [(set(counts), self._unit_vector(counts)) for counts in grams]

    def to_state(self) -> dict[str, Any]:
        """A JSON-able state (salt, IDF and per-record n-gram hashes, hex), no plain text.

        :meth:`from_state` rebuilds a verifier that scores exactly like this one, so a guard can be
        stored next to its model without pickle.
        """
        return {
            "ngram_min": self.ngram_min,
            "ngram_max": self.ngram_max,
            "salt": self._salt.hex(),
            "idf": {g.hex(): w for g, w in sorted(self._idf.items())},
            "records": [
                {
                    "grams": sorted(g.hex() for g in grams),
                    "vector": {g.hex(): w for g, w in v.items()},
                }
                for grams, v in self._records
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LeakVerifier:
        """The verifier saved by :meth:`to_state`."""
        verifier = cls.__new__(cls)
        verifier.ngram_min, verifier.ngram_max = state["ngram_min"], state["ngram_max"]
        verifier._salt = bytes.fromhex(state["salt"])
        verifier._idf = {bytes.fromhex(g): w for g, w in state["idf"].items()}
        verifier._records = [
            (
                {bytes.fromhex(g) for g in record["grams"]},
                {bytes.fromhex(g): w for g, w in record["vector"].items()},
            )
            for record in state["records"]
        ]
        return verifier

    @property
    def records(self) -> int:
        """How many forgotten texts the verifier checks against."""
        return len(self._records)

    def score(self, text: str) -> VerifierScore:
        """Score one response; 0 for a response with no n-gram in common with any record."""
        counts = self._grams(text)
        if not counts:
            return VerifierScore(0.0, 0.0, 0.0, None)
        vector = self._unit_vector(counts)
        best = VerifierScore(0.0, 0.0, 0.0, None)
        for index, (record_grams, record_vector) in enumerate(self._records):
            containment = len(record_grams & counts.keys()) / len(record_grams)
            cosine = sum(w * record_vector.get(g, 0.0) for g, w in vector.items())
            score = max(containment, cosine)
            if score > best.score:
                best = VerifierScore(score, containment, cosine, index)
        return best

    def _grams(self, text: str) -> Counter[bytes]:
        normal = normalise_text(text)
        counts: Counter[bytes] = Counter()
        for size in range(self.ngram_min, self.ngram_max + 1):
            for start in range(len(normal) - size + 1):
                gram = normal[start : start + size].encode()
                counts[hashlib.blake2b(gram, key=self._salt, digest_size=8).digest()] += 1
        return counts

    def _unit_vector(self, counts: Counter[bytes]) -> dict[bytes, float]:
        # Unknown n-grams get the largest IDF; they only matter through the norm.
        top = max(self._idf.values())
        weights = {g: (1 + math.log(c)) * self._idf.get(g, top) for g, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {g: w / norm for g, w in weights.items()}


class FactOracle:
    """Leak labels for calibration: does a forgotten fact appear, exactly or almost, in a text?

    In: the forgotten facts (short strings: a phone number, an address, a name with a
    diagnosis) and ``min_ratio`` in (0, 1]. Texts and facts are compared on lower-case
    alphanumerics only, so "555-0199" matches "555 0199"; a fact also matches a window of the
    text whose difflib ratio reaches ``min_ratio`` (1.0 = exact only).
    """

    def __init__(self, facts: Sequence[str], *, min_ratio: float = 0.9) -> None:
        if not 0 < min_ratio <= 1:
            raise ValueError(f"min_ratio must be in (0, 1], got {min_ratio}")
        self.min_ratio = min_ratio
        self._facts = [f for f in (_alnum(fact) for fact in facts) if f]
        if not self._facts:
            raise ValueError("the oracle needs at least one fact with letters or digits")

    def leaks(self, text: str) -> bool:
        """True when any fact occurs in ``text`` (exactly, or at ``min_ratio`` similarity)."""
        haystack = _alnum(text)
        return any(self._occurs(fact, haystack) for fact in self._facts)

    def _occurs(self, fact: str, haystack: str) -> bool:
        if fact in haystack:
            return True
        if self.min_ratio >= 1 or not haystack:
            return False
        width = len(fact)
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(fact)
        for size in {max(1, width - 1), width, width + 1}:
            for start in range(max(1, len(haystack) - size + 1)):
                matcher.set_seq1(haystack[start : start + size])
                if matcher.quick_ratio() >= self.min_ratio and matcher.ratio() >= self.min_ratio:
                    return True
        return False


def _alnum(text: str) -> str:
    return _NOT_ALNUM.sub("", normalise_text(text))
