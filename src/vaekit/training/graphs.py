"""The training step captured once in a CUDA graph and replayed (`cuda_graphs = true`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .loop import NO_GUARDS, Guards, LossFn, fused, train_step


class GraphedStep:
    """`train_step` captured once in a CUDA graph and replayed: one launch per step instead of hundreds.

    The first `warmup` steps run eagerly on a side stream (as capture requires), the next batch of
    `batch_size` rows is captured and every later one is copied into the captured input and replayed.
    A batch of another size (an epoch's short last batch) runs eagerly. The random draws inside
    are replayed from fresh Philox offsets, so each step still gets new noise. Needs Adam with
    `capturable=True` (`make_adam`), whose learning rate is a device tensor that `set_lr` writes;
    progress is passed as a device tensor too, so a KL warm-up still ramps. Any other Python number
    the loss reads is fixed at capture.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, batch_size: int,
                 warmup: int = 3, guards: Guards = NO_GUARDS):
        if not fused(optimizer, capturable=True):
            raise ValueError("GraphedStep needs fused Adam with capturable=True (make_adam(..., capturable=True))")
        self.module, self.optimizer, self.loss_fn, self.warmup, self.guards = module, optimizer, loss_fn, warmup, guards
        self.batch_size = batch_size
        self.graph: torch.cuda.CUDAGraph | None = None
        self.batch = self.progress = self.out = None
        self.eager_steps = 0

    def __call__(self, batch: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        if self.graph is None and self.eager_steps >= self.warmup and batch.shape[0] == self.batch_size:
            self._capture(batch)
        if self.graph is None or batch.shape != self.batch.shape:
            self.eager_steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = train_step(self.module, self.optimizer, self.loss_fn, batch, progress, self.guards)
            torch.cuda.current_stream().wait_stream(side)
            return out
        self.batch.copy_(batch)
        self.progress.fill_(progress)
        self.graph.replay()
        return self.out

    def _capture(self, batch: Tensor) -> None:
        self.batch, self.progress = batch.clone(), torch.zeros((), device=batch.device)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = train_step(self.module, self.optimizer, self.loss_fn, self.batch, self.progress, self.guards)
        self.graph = graph
