"""`train.precision`: the training steps in float32, or under autocast in bfloat16 or float16.

Autocast covers every forward pass of a training step (`batching.meta_backward`'s `forward`),
the inner loop's included: the operations on autocast's lists (convolutions, matrix products)
run in the low precision, and so do their derivatives, the second-order terms of MAML
included, since the backward of an operation runs in the dtype of its forward. What stays
float32: the meta-parameters, the inner loop's updates (theta - alpha * g, on float32 tensors;
a gradient with respect to a float32 tensor is float32), losses and batch-norm statistics
(autocast runs them in float32), the meta-gradient, its all-reduce, the optimiser and its state.
Evaluation runs in float32, so test numbers of every precision compare. float16 scales the
loss (`torch.amp.GradScaler`: the gradient is unscaled before clipping and the algorithm's
`end_step`; a step with an overflow is skipped) and needs CUDA; bfloat16 runs on CUDA and,
through PyTorch's CPU autocast, on a CPU (an AMD EPYC with avx512_bf16: a MAML conv4
meta-iteration in 0.82x float32's time; not measured on CPUs without bfloat16 instructions).
On random inputs at initialisation a bfloat16 meta-gradient is ~25% (relative norm) from
float32's for MAML, first-order MAML and ProtoNet alike: rounding, not the second-order term.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from metazoo.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The autocast context of a training step and, for float16, the loss scale of `optimizer`."""

    def __init__(self, name: str, device: torch.device, optimizer: torch.optim.Optimizer
                 ) -> None:
        if name == "fp16" and device.type != "cuda":
            raise ConfigError(f"train.precision=fp16 needs a CUDA device (this run is on "
                              f"{device.type}); use train.precision=bf16 or float32, or "
                              "--device cuda")
        if name != "float32" and device.type not in ("cuda", "cpu"):
            raise ConfigError(f"train.precision={name} runs on cuda or cpu, not on "
                              f"{device.type}; use train.precision=float32")
        self.name, self.device, self.optimizer = name, device, optimizer
        self.dtype = DTYPES.get(name)
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def forward(self) -> contextlib.AbstractContextManager[Any]:
        """The context of a forward pass: autocast to `dtype`, or nothing in float32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def loss_scale(self) -> float:
        """What the loss is multiplied by before its backward pass (1 unless float16)."""
        if self.scaler is None:
            return 1.0
        return float(self.scaler.scale(torch.ones((), device=self.device)))

    def unscale(self) -> None:
        """Divide the gradients by the loss scale (float16), noting overflows."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)

    def step(self) -> None:
        """The optimiser's step (float16: skipped after an overflow, the scale updated)."""
        if self.scaler is None:
            self.optimizer.step()
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state(self) -> dict[str, Any]:
        """The loss scale's state for a checkpoint's metadata (empty unless float16)."""
        return {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}

    def load(self, meta: dict[str, Any]) -> None:
        """Restore `state()` from a checkpoint's metadata."""
        if self.scaler is not None and "grad_scaler" in meta:
            self.scaler.load_state_dict(meta["grad_scaler"])
