"""One Celery worker process per GPU on this host, each pinned to its device.

    python -m deletion_platform.gpu_workers                 # every GPU nvidia-smi lists
    python -m deletion_platform.gpu_workers --gpus 0,2      # these devices only
    python -m deletion_platform.gpu_workers --dry-run       # print the commands, start nothing

Each process sees one device (``CUDA_VISIBLE_DEVICES=<id>``, so it is ``cuda:0`` inside), takes the
``gpu`` queue one task at a time (``--concurrency 1 --prefetch-multiplier 1``) and has its own node
name (``gpu<id>@<host>``). The launcher stays in the foreground: it forwards SIGTERM/SIGINT to every
worker (a warm shutdown: the running job finishes or is taken up again by the stale-job sweeper)
and exits when they have, with a non-zero status if any of them failed. Run it under systemd or a
container runtime that restarts it. Queues and the environment are those of any worker
(README "Production").
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence


def visible_gpus() -> list[str]:
    """The GPU ids this host offers: ``CUDA_VISIBLE_DEVICES`` when set, else nvidia-smi's list."""
    preset = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if preset:
        return parse_gpu_ids(preset)
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, check=True).stdout
    return [line.strip() for line in listing.splitlines() if line.strip()]


def parse_gpu_ids(text: str) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; ValueError naming a repeated or empty id."""
    ids = [part.strip() for part in text.split(",")]
    if not ids or any(not i for i in ids):
        raise ValueError(f"bad GPU list {text!r}: give ids separated by commas, e.g. 0,1")
    if len(set(ids)) != len(ids):
        raise ValueError(f"bad GPU list {text!r}: an id repeats (two workers on one device)")
    return ids


def worker_commands(gpu_ids: Sequence[str], *, queues: str = "gpu", loglevel: str = "INFO",
                    python: str = sys.executable) -> list[tuple[dict[str, str], list[str]]]:
    """Per GPU id: the environment additions and the argv of its worker process."""
    commands = []
    for gpu in gpu_ids:
        argv = [python, "-m", "celery", "-A", "deletion_platform", "worker", "-Q", queues, "--pool", "solo",
                "--concurrency", "1", "--prefetch-multiplier", "1", "-n", f"gpu{gpu}@%h", "--loglevel", loglevel]
        commands.append(({"CUDA_VISIBLE_DEVICES": gpu}, argv))
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", help="GPU ids separated by commas (default: every GPU of this host)")
    parser.add_argument("--queues", default="gpu", help="queues each worker takes (default: gpu)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and start nothing")
    args = parser.parse_args(argv)
    try:
        gpus = parse_gpu_ids(args.gpus) if args.gpus else visible_gpus()
    except ValueError as exc:
        parser.error(str(exc))
    if not gpus:
        parser.error("no GPU found (nvidia-smi lists none and CUDA_VISIBLE_DEVICES is unset); give --gpus")
    commands = worker_commands(gpus, queues=args.queues)
    if args.dry_run:
        for extra, command in commands:
            print(" ".join([*(f"{k}={v}" for k, v in extra.items()), *command]))
        return 0
    processes = [subprocess.Popen(command, env={**os.environ, **extra}) for extra, command in commands]

    def forward(signum, _frame):
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [process.wait() for process in processes]
    return max((abs(code) for code in codes), default=0)


if __name__ == "__main__":
    sys.exit(main())
