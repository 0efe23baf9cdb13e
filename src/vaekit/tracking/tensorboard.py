"""Optional TensorBoard logging (`vaekit train --tensorboard`, extra `tensorboard`).

Scalars go under hierarchical tags ("train/elbo", "val/kl", …) so TensorBoard groups them, and a
grid of prior samples is logged every epoch. The writer is imported lazily.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import VaekitError
from ..files import probe_writable, write_error
from ..pictures.png import image_grid
from ..rng import forked_rng

log = logging.getLogger(__name__)


class TensorBoardLogger:
    """Call with (record, model, config) after each epoch; `close()` at the end. Writes to RUN/tensorboard."""

    def __init__(self, log_dir: str | Path, n_samples: int = 64, seed: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise VaekitError("--tensorboard needs the tensorboard package: pip install vaekit[tensorboard]") from None
        if Path(log_dir).is_symlink():  # a run directory may come from someone else: write nothing through a link
            raise VaekitError(f"{log_dir}: is a symbolic link, and vaekit writes no file of a run through a link: "
                              "remove the link")
        probe_writable(Path(log_dir))  # its event files are written by a thread: a full disk must be said here
        try:
            self.writer = SummaryWriter(log_dir=str(log_dir))
        except OSError as e:  # a full disk, no permission: said before training starts
            raise write_error(Path(log_dir), e) from None
        self.n, self.seed, self.on = n_samples, seed, True

    def __call__(self, record: dict[str, Any], model, cfg) -> None:
        """Log one epoch; a write that fails (the disk filled up meanwhile) is one warning, then TensorBoard
        logging stops and training goes on: its checkpoints are what matters."""
        if not self.on:
            return
        try:
            self._log(record, model, cfg)
        except OSError as e:
            self.on = False
            log.warning("TensorBoard logging stopped (%s); training goes on without it", write_error(Path(
                self.writer.log_dir), e))

    def _log(self, record: dict[str, Any], model, cfg) -> None:
        step = int(record["epoch"])
        for tag, value in record.items():
            if "/" in tag:  # train/… and val/… metrics; epoch, step and seconds are the x-axis or noise
                self.writer.add_scalar(tag, value, step)
        with forked_rng(next(model.parameters()).device):
            torch.manual_seed(self.seed)  # the same z every epoch: the grid shows the model change
            samples = model.sample(self.n).cpu()
        self.writer.add_image("samples", image_grid(samples, cfg.model.data_shape), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError as e:
            log.warning("TensorBoard's last write failed (%s)", write_error(Path(self.writer.log_dir), e))
