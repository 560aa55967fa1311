"""Training's metrics: rank 0's log files (CSV or TensorBoard) and the losses summed
between two log rows."""

from __future__ import annotations

import csv
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["LossMeter", "RunLogger"]


class RunLogger:
    """Rank 0's metrics: CSV files (default) or TensorBoard."""

    def __init__(self, out_dir: Path, kind: str, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.out_dir = out_dir
        self.tb = None
        if not enabled:
            return
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=resume_step)
            except ImportError:
                # Attributed to posefix.train.train (RunLogger <- build_engine <- _train <- train).
                warnings.warn("run.log=tensorboard but tensorboard is not installed; "
                              "logging to CSV", stacklevel=4)
        for name in ("log.csv", "val.csv"):
            self._truncate(out_dir / name, resume_step)

    @staticmethod
    def _truncate(path: Path, resume_step: int | None) -> None:
        """Drop rows logged after the checkpoint a run resumes from (or all: a fresh run)."""
        if not path.is_file():
            return
        if resume_step is None:
            path.unlink()
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(r["step"]) <= resume_step]
        if rows and len(keep) < len(rows):
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(keep)

    def write(self, name: str, row: dict[str, Any]) -> None:
        """Append one row of scalars to ``name`` (``log`` or ``val``)."""
        if not self.enabled:
            return
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{name}/{k}", v, row["step"])
            self.tb.flush()
            return
        path = self.out_dir / f"{name}.csv"
        new = not path.is_file()
        if not new:
            with path.open(newline="") as f:
                fields = next(csv.reader(f), None)
            if fields != list(row):
                new = True  # a different set of columns (e.g. other val sets): start over
        with path.open("w" if new else "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def close(self) -> None:
        """Flush and close."""
        if self.tb is not None:
            self.tb.close()


@dataclass
class LossMeter:
    """The losses summed since the last ``log`` row, and the crops trained since then."""

    sums: torch.Tensor  # loss, ce, l1, err, micro-batches
    crops: int = 0
    since: float = field(default_factory=time.perf_counter)
    last_loss: float | None = None  # the last logged mean loss

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        """Count one micro-batch's losses."""
        zero = torch.zeros((), device=self.sums.device)
        self.sums += torch.stack([losses["loss"].detach(), losses["ce"].detach(),
                                  losses["l1"].detach(), losses.get("err", zero).detach(),
                                  torch.ones((), device=self.sums.device)])

    def reset(self) -> None:
        """Start the next row."""
        self.sums.zero_()
        self.since, self.crops = time.perf_counter(), 0
