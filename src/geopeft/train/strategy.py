"""How the model and AdamW are spread over ranks: DDP (or one process), or DeepSpeed ZeRO stage 1, 2 or 3.

Every strategy saves the same world-size-independent training state: the full model ``state_dict`` and the
optimiser state in ``torch.optim.AdamW.state_dict()`` form (per-parameter ``exp_avg``, ``exp_avg_sq`` and
``step``, indexed by the order of the trainable parameters). A checkpoint written by 2 ranks under ZeRO-2 or
ZeRO-3 thus resumes on 1 rank under DDP, and the other way round. Under ZeRO the partitioned optimiser state is
gathered with DeepSpeed's tensor-fragment API (``safe_get_full_optimizer_state``), a collective every rank joins.

Precision is the engine's business (``torch.autocast``), so DeepSpeed runs in its fp32 mode. The caller's module
stays fp32 and complete on every rank, which keeps evaluation a plain forward pass without collectives (ranks may
hold different numbers of evaluation batches). ZeRO 1 and 2 train that module in place. ZeRO-3 partitions the
parameters of the module it trains, so it trains a copy (:class:`ZeRO3Strategy`) and
:meth:`Strategy.sync_model` gathers the trained parameters back into the caller's module before it is evaluated
or saved.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from geopeft.errors import ConfigError
from geopeft.spec import TrainSpec
from geopeft.train.distributed import world_size
from geopeft.train.sampling import BatchLayout

#: ZeRO stage of each DeepSpeed strategy this engine runs.
ZERO_STAGES = {"deepspeed_zero1": 1, "deepspeed_zero2": 2, "deepspeed_zero3": 3}


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class LocalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over this rank's batch only, for inputs of any rank >= 2 (what ``SyncBatchNorm`` accepts)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions, got {input.dim()}")


def unsync_batch_norm(model: nn.Module) -> int:
    """Swap every ``SyncBatchNorm`` for a :class:`LocalBatchNorm` with the same state; return how many.

    gloo cannot synchronise batch statistics (``SyncBatchNorm`` needs a GPU, and DDP refuses it on the CPU), so
    several CPU ranks normalise over their own batches. The state dict keys stay the same.
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.SyncBatchNorm):
                local = LocalBatchNorm(
                    child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
                )
                local.load_state_dict(child.state_dict())
                setattr(parent, name, local.to(next(child.buffers(), torch.empty(0)).device))
                swapped += 1
    return swapped


class Strategy:
    """One process, or DDP when a process group of several ranks exists.

    Args:
        model: the model on its device, with the training state already loaded.
        spec: the optimisation settings (lr, weight decay).
        layout: the batch layout (its accumulation divides the loss).
        device: this rank's device.
    """

    def __init__(self, model: nn.Module, spec: TrainSpec, layout: BatchLayout, device: torch.device) -> None:
        self.model = model
        self.layout = layout
        self.optimizer = torch.optim.AdamW(_trainable(model), lr=spec.lr, weight_decay=spec.weight_decay)
        self.module: nn.Module = model
        if world_size() > 1:
            if device.type != "cuda":
                unsync_batch_norm(model)
            ids = [device.index] if device.type == "cuda" else None
            # Some methods leave trainable parameters out of the loss (ViT-Adapter's unused pyramid levels).
            self.module = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def forward(self, image: torch.Tensor, metadata: Any) -> torch.Tensor:
        """Logits of a training micro-batch (through the wrapper, which may synchronise)."""
        out: torch.Tensor = self.module(image, metadata)
        return out

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        """Accumulate the gradient of one micro-batch; gradients are synchronised on the ``last`` one only."""
        sync = contextlib.nullcontext()
        if not last and isinstance(self.module, DistributedDataParallel):
            sync = self.module.no_sync()  # type: ignore[assignment]  # a context manager like nullcontext
        with sync:
            (loss / self.layout.accumulation).backward()  # type: ignore[no-untyped-call]

    def step(self) -> None:
        """Apply the accumulated gradient and clear it."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_state(self) -> dict[str, Any]:
        """The optimiser state in ``AdamW.state_dict()`` form (a collective under ZeRO)."""
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`optimizer_state` (from any strategy and world size)."""
        self.optimizer.load_state_dict(state)

    def sync_model(self) -> None:
        """Give every rank rank 0's buffers before evaluating or checkpointing (a collective with several ranks).

        The caller's module is the trained one, so the weights are in place. Buffers (BatchNorm running
        statistics) are not: each rank updates them from its own batches (DDP broadcasts them only at the start
        of each forward; DeepSpeed ZeRO-1/2 never), so without this a sharded evaluation would mix slightly
        different models. Rank 0's are the ones its checkpoints keep.
        """
        if world_size() > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)

    def close(self) -> None:
        """Release what the strategy holds beyond the module (DeepSpeed's hooks); nothing here."""


class DeepSpeedStrategy(Strategy):
    """DeepSpeed ZeRO stage 1 or 2 around the same AdamW (``zero_allow_untested_optimizer``), fp32.

    DeepSpeed needs ``RANK`` etc. in the environment and a process group, even with one rank
    (:func:`geopeft.train.distributed.process_group` with ``always=True``).
    """

    def __init__(
        self, model: nn.Module, spec: TrainSpec, layout: BatchLayout, device: torch.device, *, stage: int
    ) -> None:
        import deepspeed  # ~2 s to import: only cells that ask for it pay

        # DeepSpeed wraps the existing process group; without a backend named it picks the accelerator's (ccl).
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        self.model = model
        self.layout = layout
        self.stage = stage
        self.optimizer = torch.optim.AdamW(_trainable(model), lr=spec.lr, weight_decay=spec.weight_decay)
        config = {
            "train_batch_size": layout.batch_size,
            "train_micro_batch_size_per_gpu": layout.micro_batch,
            "gradient_accumulation_steps": layout.accumulation,
            "zero_optimization": {"stage": stage},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
        }
        engine, zero_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=self.optimizer, config=config)
        self.engine = engine
        self.zero = zero_optimizer
        self.module = engine

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        """DeepSpeed divides by the accumulation itself and steps only at the accumulation boundary."""
        self.engine.backward(loss)
        if not last:
            self.engine.step()

    def step(self) -> None:
        """The boundary step (DeepSpeed clears the gradients)."""
        self.engine.step()

    def optimizer_state(self) -> dict[str, Any]:
        """Gather every parameter's moments into ``AdamW.state_dict()`` form (every rank must call it)."""
        from deepspeed.utils import safe_get_full_optimizer_state

        params = _trainable(self.model)
        steps = [s["step"] for s in self.optimizer.state.values() if "step" in s]
        state: dict[int, dict[str, Any]] = {}
        if steps:
            for i, p in enumerate(params):
                state[i] = {"step": steps[0].detach().clone().cpu()}
                for key in ("exp_avg", "exp_avg_sq"):
                    value = safe_get_full_optimizer_state(p, key)
                    state[i][key] = value.detach().cpu().clone().reshape(_full_shape(p))
        group = {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [{**group, "params": list(range(len(params)))}]}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Scatter moments saved by any strategy into this rank's partitions, and restore the hyper-parameters."""
        from deepspeed.utils import safe_set_full_optimizer_state

        groups = state["param_groups"]
        if len(groups) != 1:
            raise ConfigError(f"a checkpoint with {len(groups)} optimiser groups cannot resume under DeepSpeed")
        for group in self.optimizer.param_groups:
            group.update({k: v for k, v in groups[0].items() if k != "params"})
        saved = state["state"]
        if not saved:
            return
        step = next(iter(saved.values()))["step"]
        # The wrapped AdamW creates its state lazily at the first step; create it (zeros) for every flat fp32
        # partition, then write the full moments through the fragment API.
        for flat in self._flat_partitions():
            self.optimizer.state[flat] = {
                "step": torch.as_tensor(step, dtype=torch.float32).clone(),
                "exp_avg": torch.zeros_like(flat),
                "exp_avg_sq": torch.zeros_like(flat),
            }
        if self.stage < 3:  # ZeRO 1/2 link each parameter's fragment to the state once; relink to the new one
            self.zero._hp_optimizer_states_linked = False
            self.zero._lazy_init_hp_params_optimizer_state()
        for i, p in enumerate(_trainable(self.model)):
            for key in ("exp_avg", "exp_avg_sq"):
                safe_set_full_optimizer_state(p, saved[i][key].to(p.device), key)

    def close(self) -> None:
        """Remove DeepSpeed's hooks and buffers while the process group still exists (every rank calls it)."""
        self.engine.destroy()

    def _flat_partitions(self) -> list[torch.Tensor]:
        """This rank's flat fp32 partitions, the tensors the wrapped AdamW steps."""
        flats: list[torch.Tensor] = self.zero.single_partition_of_fp32_groups
        return flats


def _full_shape(p: nn.Parameter) -> torch.Size:
    """The shape of a parameter, also of a ZeRO-3 partitioned one (whose own tensor is empty)."""
    shape: torch.Size = getattr(p, "ds_shape", p.shape)
    return shape


class ZeRO3Strategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO stage 3: parameters, gradients and optimiser state partitioned over the ranks.

    DeepSpeed trains a copy of the caller's module (partitioning replaces each parameter's tensor by this
    rank's slice); the caller's module keeps complete weights for exact evaluation and world-size-independent
    checkpoints, and :meth:`sync_model` gathers the trained parameters into it.
    """

    def __init__(self, model: nn.Module, spec: TrainSpec, layout: BatchLayout, device: torch.device) -> None:
        self.target = model
        super().__init__(copy.deepcopy(model), spec, layout, device, stage=3)

    def _flat_partitions(self) -> list[torch.Tensor]:
        flats: list[torch.Tensor] = self.zero.fp32_partitioned_groups_flat
        return flats

    @torch.no_grad()
    def sync_model(self) -> None:
        """Gather the trained parameters into the caller's module, and rank 0's buffers (a collective).

        Frozen parameters never change, so only the trainable ones are gathered. Buffers (BatchNorm statistics)
        are per rank; rank 0's, the ones its checkpoints keep, are broadcast so that every rank evaluates the
        same model.
        """
        from deepspeed.runtime.zero.partition_parameters import GatheredParameters

        pairs = [(p, q) for p, q in zip(self.model.parameters(), self.target.parameters(), strict=True)]
        trained = [(p, q) for p, q in pairs if p.requires_grad]
        with GatheredParameters([p for p, _ in trained], modifier_rank=None):
            for p, q in trained:
                q.copy_(p.data.view(q.shape))
        for b, c in zip(self.model.buffers(), self.target.buffers(), strict=True):
            c.copy_(b)
            if world_size() > 1:
                dist.broadcast(c, 0)


def make_strategy(model: nn.Module, spec: TrainSpec, layout: BatchLayout, device: torch.device) -> Strategy:
    """The strategy ``spec.strategy`` names (one of :data:`geopeft.spec.STRATEGIES`)."""
    if spec.strategy == "ddp":
        return Strategy(model, spec, layout, device)
    if spec.strategy not in ZERO_STAGES:
        raise ConfigError(
            f"train.strategy {spec.strategy!r} is not run by this engine; use ddp or deepspeed_zero1/2/3"
        )
    if ZERO_STAGES[spec.strategy] == 3:
        return ZeRO3Strategy(model, spec, layout, device)
    return DeepSpeedStrategy(model, spec, layout, device, stage=ZERO_STAGES[spec.strategy])
