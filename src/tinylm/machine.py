"""What a benchmark prints next to its numbers (the CPU model) and how it writes them (JSON + Markdown)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from tinylm.fileio import write_json, write_text


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), printed next to every timing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_benchmark(out: Path, name: str, result: dict[str, Any], table: str) -> int:
    """Print the table and write OUT/NAME.json (everything) and OUT/NAME.md (the table)."""
    print(table)
    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", table + "\n")
    print(f"\nwrote {out / f'{name}.json'} and {out / f'{name}.md'}")
    return 0
