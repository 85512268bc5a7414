"""The machine a run happens on, described once for ``embgemma info``, ``embgemma bench`` and the
server's ``/info``: the CPU's name, the cores this process may use, the system, and which kernels
and weights mode embgemma picks here. The same wheel picks differently on different CPUs, so every
figure it prints says where it came from."""

from __future__ import annotations

import os
import platform
from typing import Any

from . import _core
from .auto_dtype import resolve


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may use (its affinity mask), whatever OMP_NUM_THREADS says."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def platform_info() -> dict[str, str]:
    """CPU, architecture, system and Python, as ``embgemma info`` prints them first."""
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def machine_info(threads: int) -> dict[str, Any]:
    """The machine line's fields for a run on ``threads`` threads (bench results carry it)."""
    b = _core.build_info()
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on this platform
        load = None
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "embgemma": b["version"],
        "cores": usable_cores(),
        "threads": threads,
        "isa": b["chosen_isa"],
        "auto_dtype": resolve(b["chosen_isa"])[0],  # what dtype="auto" (the default) gives a float file here
        "compiled_isas": b["compiled_isas"],
        "supported_isas": b["supported_isas"],
        "openmp": b["openmp"],
        "load_average_1min": load,  # at the end of the run: other work on the machine skews the numbers
    }


def machine_line(m: dict[str, Any]) -> str:
    """``machine_info`` as one line, with a warning when the machine was busy with other work."""
    line = (
        f"{m['cpu']} ({m['machine']}, {m['cores']} cores usable), {m['threads']} threads, ISA {m['isa']} "
        f"(supported: {', '.join(m['supported_isas'])}), default dtype here: {m.get('auto_dtype', '?')}, "
        f"OpenMP {'on' if m['openmp'] else 'off'}, embgemma {m['embgemma']}, Python {m['python']}, {m['system']}"
    )
    load = m.get("load_average_1min")
    if load is not None:
        line += f", load average {load:.2f}"
        if load > max(m["cores"], m["threads"]) + 0.5:  # more runnable threads than cores, ours included
            line += " (the machine was busy with other work: the numbers are low and noisy)"
    return line
