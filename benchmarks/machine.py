"""Shared by the benchmarks: describe the machine and append a dated section to RESULTS.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def describe_machine() -> str:
    """One line: CPU model, cores, memory, OS, Python and torch versions."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(line.split()[1] for line in fh if line.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"


def append_results(path: Path, *, title: str, command: str, body: str) -> None:
    """Append a section with date, machine and command to ``path`` (created if missing)."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = f"\n## {title}\n\n- date: {stamp}\n- machine: {describe_machine()}\n- command: `{command}`\n\n{body}\n"
    if not path.exists():
        path.write_text("# Benchmark results\n\nEach section is appended by the benchmark script named in it.\n")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(section)
    print(f"appended to {path}")
