"""Typed command-line values: each option's range checked when the arguments are parsed.

Each factory returns an ``argparse`` ``type=`` callable that raises
:class:`argparse.ArgumentTypeError` (argparse's one line, exit 2) for a value out of its
range, and a short text of the range for the option's help. :func:`check_device` names
the devices this machine has; it imports torch only to look for CUDA devices where one is
asked for.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable

from .backends import cuda_available

__all__ = ["MAX_WORKERS", "available_devices", "check_device", "device_type", "finite_float",
           "float_range", "int_range"]

#: The most image-reading threads ``--workers`` takes.
MAX_WORKERS = max(64, 8 * (os.cpu_count() or 1))


def int_range(low: int, high: int | None = None, *, zero: str | None = None
              ) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (``high`` None: no upper bound); ``zero``: 0 is also
    allowed and means this (e.g. ``"full size"``)."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if zero is not None:
        allowed += f" or 0 ({zero})"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not ((zero is not None and value == 0) or
                (value >= low and (high is None or value <= high))):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value" for other errors
    return parse


def float_range(low: float, high: float, *, low_open: bool = False
                ) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (
                low_open and value == low):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def finite_float(text: str) -> float:
    """Any finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def device_type(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether this machine has it is
    :func:`check_device`'s)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' (this machine "
            f"has: {', '.join(available_devices())})")
    return text


def available_devices() -> list[str]:
    """``cpu`` and each CUDA device torch sees (none where torch is not installed); torch is
    imported only where a CUDA driver has a device (:func:`posefix.backends.cuda_available`)."""
    if not cuda_available():
        return ["cpu"]
    import torch

    n = torch.cuda.device_count()
    return ["cpu"] + [f"cuda:{i}" for i in range(n)]


def check_device(device: str) -> str | None:
    """None if this machine has ``device`` (``auto`` and ``cpu`` always), else the one-line
    reason naming the devices it has. Imports torch only for a ``cuda`` device."""
    if device in ("auto", "cpu"):
        return None
    have = available_devices()
    index = int(device.partition(":")[2] or 0)
    if f"cuda:{index}" in have:
        return None
    return (f"device {device!r} is not on this machine (it has: {', '.join(have)}); use "
            "--device cpu or auto")
