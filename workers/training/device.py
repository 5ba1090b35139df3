"""Where training runs, and how it is made reproducible."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

import torch


def select_device(prefer: str | None = None) -> torch.device:
    """CUDA when present, else CPU. ``prefer`` ("cpu", "cuda", "cuda:1") or the environment
    variable ``WORKERS_DEVICE`` overrides; asking for CUDA without one raises RuntimeError."""
    choice = prefer or os.environ.get("WORKERS_DEVICE") or ""
    if not choice:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {choice!r} was asked for but CUDA is not available")
    return device


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a base seed and names/indices (shard, slice, epoch, ...).

    Hashing keeps seeds of neighbouring shards unrelated and stable when others are added."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def deterministic(seed: int | None = None) -> Iterator[None]:
    """Deterministic kernels (and a seeded global RNG) for the duration of the block.

    On CUDA the cuBLAS workspace must be fixed for determinism; the variable is set when absent.
    The previous settings are restored on exit.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_cudnn = torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    if seed is not None:
        torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = previous_cudnn


def training_environment(device: str | torch.device) -> dict[str, object]:
    """What a bit-for-bit replay of a training step depends on, recorded where it ran: the torch
    version, the device type (and, on CUDA, the card and the CUDA version), the number of CPU
    threads and whether deterministic algorithms were on (the recipes switch them on inside
    :func:`deterministic`; outside it this records the process's setting)."""
    device = torch.device(device)
    environment: dict[str, object] = {
        "torch": torch.__version__,
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": True,
    }
    if device.type == "cuda":
        environment["device_name"] = torch.cuda.get_device_name(device)
        environment["cuda"] = torch.version.cuda
    return environment


REPRODUCED_FIELDS = ("torch", "device_type", "device_name", "cuda")


def environment_difference(recorded: dict[str, object] | None, device: str | torch.device) -> str | None:
    """Why ``recorded`` cannot be reproduced on ``device`` in this process, or None when it can.
    The thread count is not a difference: a replay sets it (:func:`recorded_threads`)."""
    if not recorded:
        return "the producing run recorded no environment"
    here = training_environment(device)
    differences = [f"{name} {recorded.get(name)!s} recorded, {here.get(name)!s} here"
                   for name in REPRODUCED_FIELDS if recorded.get(name) != here.get(name)]
    return "; ".join(differences) or None


@contextlib.contextmanager
def recorded_threads(threads: object) -> Iterator[None]:
    """Run the block with the recorded number of torch CPU threads (a reduction's order can
    depend on it), restoring the previous number after."""
    previous = torch.get_num_threads()
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
