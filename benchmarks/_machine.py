"""One line describing the machine a benchmark ran on, printed beside its figures so the
recorded results say where they came from."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs visible; torch threads {torch.get_num_threads()}; {gpu}; "
        f"python {platform.python_version()}; torch {torch.__version__}"
    )
