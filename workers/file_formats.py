"""What a file that is not safetensors resembles, named for the error a user reads. Torch-free, so
the web side and the job listings can use the same sentences as the store.

These prefixes never decide whether a file is refused: a valid safetensors file begins with its
header length, whose bytes may read like any of them (640 = ``80 02 ...``, 67,324,752 = ``PK\\x03\\x04``).
The store parses first and names a prefix only for a file that failed to parse."""

from __future__ import annotations

PICKLE_SENTENCE = "this is a Python pickle; pickles are never loaded"
ZIP_SENTENCE = "this is a zip archive (torch.save checkpoint?); only safetensors is loaded"

# The pickle PROTO opcode (protocols 2-5: pickle.dump, joblib, torch.save before 1.6) and a zip local
# file header (torch.save since 1.6).
FOREIGN_FORMATS: tuple[tuple[tuple[bytes, ...], str], ...] = (
    ((b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"), PICKLE_SENTENCE),
    ((b"PK\x03\x04",), ZIP_SENTENCE),
)


def foreign_format(data: bytes) -> str | None:
    """The sentence naming the foreign format ``data`` begins like, or None. Say it only of a file
    that did not parse as what it should be."""
    for prefixes, sentence in FOREIGN_FORMATS:
        if data.startswith(prefixes):
            return sentence
    return None
