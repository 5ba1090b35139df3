"""Reading the suppression list: is this record, this content or this person's identifier erased?

Every way data comes in asks it: an import refuses what it matches, and every read of a dataset
(a source's rows, a folder's files) leaves out what it matches, so a record the company still holds,
or that comes back under another key, another subject or another content key, is never trained on
again (workers.data_sources).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from foundation.errors import ValidationFailed
from models_registry.models import SuppressionEntry, SuppressionKind
from models_registry.pseudonyms import (
    content_fingerprint,
    content_fingerprint_rekey,
    current_content_key_version,
    identifier_digests_all_versions,
)


@dataclass
class SuppressionList:
    """The suppression entries of one dataset name (and those of every dataset), ready to match.

    Content fingerprints are held under the current content key version (entries not re-keyed yet
    are moved up on load), so one fingerprint of a record's content is matched against all."""

    keys: set[str] = field(default_factory=set)
    contents: set[bytes] = field(default_factory=set)
    subjects: set[tuple[str, int, bytes]] = field(default_factory=set)

    def has_key(self, external_key: str) -> bool:
        return external_key in self.keys

    def has_content(self, content: bytes | str) -> bool:
        return bool(self.contents) and content_fingerprint(content)[0] in self.contents

    def has_fingerprint(self, fingerprint: bytes, key_version: int) -> bool:
        """A stored fingerprint (a registered record's) of suppressed content."""
        return bool(self.contents) and content_fingerprint_rekey(fingerprint, from_version=key_version) in self.contents

    def has_digest(self, digests: Iterable[tuple[str, int, bytes]]) -> bool:
        """Any of (identifier kind, pepper version, digest) suppressed."""
        return any(d in self.subjects for d in digests)

    def has_identifier(self, identifiers: Mapping[str, str]) -> bool:
        """Any of the raw identifiers (kind -> value, as a source row or a folder holds them)
        suppressed, under any pepper version. A value that is no identifier of its kind matches nothing."""
        if not self.subjects:
            return False
        for kind, value in identifiers.items():
            try:
                by_version = identifier_digests_all_versions(kind, value)
            except ValidationFailed:
                continue
            if self.has_digest((kind, version, digest) for version, digest in by_version.items()):
                return True
        return False


def suppression_list(*, dataset_name: str) -> SuppressionList:
    """What is suppressed for the dataset ``dataset_name`` (any version): its erased record keys and
    contents, and every erased subject's identifier digests."""
    found = SuppressionList()
    current = current_content_key_version()
    for kind, external_key, digest, key_version, identifier_kind in SuppressionEntry.objects.filter(
            dataset_name__in=[dataset_name, ""]).values_list(
            "kind", "external_key", "digest", "key_version", "identifier_kind").iterator(chunk_size=10000):
        if kind == SuppressionKind.RECORD:
            found.keys.add(external_key)
        elif kind == SuppressionKind.CONTENT and digest:
            found.contents.add(content_fingerprint_rekey(bytes(digest), from_version=key_version, to_version=current))
        elif kind == SuppressionKind.SUBJECT and digest:
            found.subjects.add((identifier_kind, key_version, bytes(digest)))
    return found
