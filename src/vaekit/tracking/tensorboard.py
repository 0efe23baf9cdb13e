"""Optional TensorBoard logging (`vaekit train --tensorboard`, extra `tensorboard`).

Scalars go under hierarchical tags ("train/elbo", "val/kl", …) so TensorBoard groups them, and a
grid of prior samples is logged every epoch. The writer is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import VaekitError
from ..pictures.png import image_grid
from ..rng import forked_rng


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
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.n, self.seed = n_samples, seed

    def __call__(self, record: dict[str, Any], model, cfg) -> None:
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
        self.writer.close()
