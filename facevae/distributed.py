"""Several processes, one run: the torch side of :mod:`shared.distributed` (``torchrun``).

What makes N processes train exactly the run one process would train on the same global batches:

* **One process group**, joined lazily by :func:`init` when ``WORLD_SIZE`` > 1: gloo for CPU tensors,
  plus NCCL for CUDA tensors when CUDA exists (``"cpu:gloo,cuda:nccl"``, so object broadcasts and
  barriers go over gloo whatever the training device). It times out after
  :func:`shared.distributed.timeout_s` and is destroyed when the process exits. A group the
  caller initialised first is used as it is.
* **Shards of the global batch** (:func:`shard_of`): rank r computes rows ``r::world`` of each batch
  that :mod:`shared.training` plans, with the matching rows of its noise ε. Its loss is weighted by
  ``n_local / n_global`` and the gradients are *summed* over ranks, which gives the gradient of the
  global batch mean even when shards differ in size (:func:`reduce_step`). A batch smaller than the
  world is computed whole by every rank, weighted ``1 / world``.
* **Hand-made all-reduce instead of DistributedDataParallel**: the engine calls
  ``model.loss_terms`` rather than ``forward`` (which DDP's hooks need), and one flat all-reduce of
  every gradient and every logged term per step is exact, simple and cheap for models of this size
  (it does not overlap communication with the backward pass, which DDP would).
* **BatchNorm over the global batch** (:class:`GlobalBatchNorm`): per-rank batch statistics are
  not those of one process, and every preset has BatchNorm. ``torch.nn.SyncBatchNorm`` refuses CPU
  tensors (torch 2.13), so training-mode BatchNorm is rebuilt here from two differentiable
  all-reduces (sum and count, then the centred sum of squares); its backward all-reduces the
  gradients of the statistics, so the gradient is that of the global batch. Parameters, buffers
  and ``state_dict`` keys are those of the ``BatchNorm`` it replaces, so checkpoints do not change.
* **Identical weights**: rank 0's parameters and buffers are broadcast once (:func:`broadcast_module`);
  after that every rank applies the same reduced gradient with the same optimiser.

What is *not* bitwise the one-process run: float sums in another order (about 1e-7 relative per step),
free bits (the floor applies to each shard's batch-mean KL, a nonlinear function of the batch) and
dropout (the CNN's masks are drawn per rank, from a generator seeded by rank).
"""
from __future__ import annotations

import atexit
import datetime
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from shared import distributed as env
from shared.errors import ConfigError, RunError

__all__ = ["init", "is_active", "broadcast_object", "barrier", "broadcast_module", "Shard", "shard_of",
           "reduce_step", "reduce_terms", "GlobalBatchNorm", "convert_batchnorm", "set_batchnorm_sync",
           "rank_seed"]

log = logging.getLogger(__name__)


def _lost(what: str, exc: BaseException) -> RunError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RunError(f"{env.describe()}: lost contact with the other processes during {what} ({first}); another "
                    f"process failed (its error is printed above) or none answered within {env.timeout_s():g} s "
                    f"(${env.TIMEOUT_ENV})")


def init() -> bool:
    """Join the other processes when ``WORLD_SIZE`` > 1 (idempotent).

    Returns:
        True when this process trains together with others.

    Raises:
        RunError: the group cannot be joined (unreachable ``MASTER_ADDR``, timeout), or an existing
            group disagrees with ``RANK``/``WORLD_SIZE``.
        ConfigError: torch was built without ``torch.distributed``.
    """
    if not env.is_distributed():
        return False
    if not torch.distributed.is_available():
        raise ConfigError(f"WORLD_SIZE={env.world_size()} asks for several processes, but this torch build has no "
                          f"torch.distributed")
    dist = torch.distributed
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda and env.local_rank() < torch.cuda.device_count():
            torch.cuda.set_device(env.local_rank())  # NCCL binds each process to the GPU it trains on
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
        # torch._dynamo (imported lazily by the first torch.optim optimiser) keeps references to a
        # process group that exists when it is imported, which _destroy could then not free
        importlib.import_module("torch._dynamo")
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=env.timeout_s()))
        except (RuntimeError, ValueError) as exc:
            raise _lost("start-up (init_process_group)", exc) from None
        atexit.register(_destroy)
        log.info("%s: joined the process group (%s)", env.describe(), backend)
    if dist.get_world_size() != env.world_size() or dist.get_rank() != env.rank():
        raise RunError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()} but the "
                       f"environment says {env.describe()}: initialise it from torchrun's variables")
    return True


def _destroy() -> None:
    """At exit: free the group and join its gloo threads while the interpreter still runs.

    A thread left running into the interpreter's finalisation aborts the process (SIGABRT) when it
    releases a tensor; ``destroy_process_group`` frees the group only if nothing else holds it.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_active() -> bool:
    """True when a process group of more than one process is up."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def broadcast_object(obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object; joins the group first).

    Raises:
        RunError: another process is gone or did not answer in time.
    """
    init()
    box = [obj]
    try:
        torch.distributed.broadcast_object_list(box, src=0)
    except RuntimeError as exc:
        raise _lost("a broadcast from rank 0", exc) from None
    return box[0]


def barrier() -> None:
    """Wait until every process gets here (joins the group first).

    Raises:
        RunError: another process is gone or did not answer in time.
    """
    init()
    try:
        torch.distributed.barrier()
    except RuntimeError as exc:
        raise _lost("a barrier", exc) from None


def broadcast_module(module: nn.Module) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank 0's."""
    try:
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(tensor.data, src=0)
    except RuntimeError as exc:
        raise _lost("the broadcast of rank 0's weights", exc) from None


def _all_reduce_(tensor: Tensor, what: str) -> Tensor:
    try:
        torch.distributed.all_reduce(tensor)
    except RuntimeError as exc:
        raise _lost(what, exc) from None
    return tensor


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks (the sum's adjoint)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:  # type: ignore[override]
        return _all_reduce_(tensor.clone(memory_format=torch.contiguous_format), "BatchNorm statistics")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _all_reduce_(grad.clone(memory_format=torch.contiguous_format), "BatchNorm gradients")


@dataclass(frozen=True)
class Shard:
    """This rank's part of one global batch.

    Attributes:
        rows: positions in the global batch this rank computes.
        weight: the factor of its batch-mean loss and terms (sums over ranks to the global mean).
        sync_bn: whether BatchNorm pools statistics over ranks (False when every rank has every row).
    """

    rows: np.ndarray
    weight: float
    sync_bn: bool


def shard_of(n: int, rank: Optional[int] = None, world: Optional[int] = None) -> Shard:
    """The :class:`Shard` of ``rank`` of ``world`` (default: this process's) in a global batch of ``n`` rows."""
    if rank is None or world is None:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if n >= world:
        rows = env.shard(np.arange(n), rank, world)
        return Shard(rows, len(rows) / n, True)
    # a shard would be empty (a loss over no rows is NaN): every rank computes the whole batch instead
    return Shard(np.arange(n), 1.0 / world, False)


def _flat_terms(terms: Mapping[str, Tensor], weight: float, like: Tensor) -> Tensor:
    return torch.stack([terms[k].detach().float().reshape(()) for k in terms]).to(like.device) * weight


def reduce_step(params: Iterable[nn.Parameter], terms: Mapping[str, Tensor], weight: float) -> dict[str, Tensor]:
    """Sum the (already weighted) gradients over ranks in place and return the global-mean ``terms``.

    One all-reduce carries every gradient and the logged terms, each term weighted by ``weight``.
    A parameter without a gradient on this rank counts as a zero gradient.

    Raises:
        RunError: another process is gone or did not answer in time.
    """
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    like = grads[0] if grads else next(iter(terms.values()))
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [_flat_terms(terms, weight, like)])
    _all_reduce_(flat, "the gradient all-reduce")
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view(g.shape))  # copy_ keeps g's (channels-last) strides
        offset += g.numel()
    return dict(zip(terms, flat[offset:]))


def reduce_terms(terms: Mapping[str, Tensor], weight: float) -> dict[str, Tensor]:
    """Global-mean ``terms`` from each rank's batch means weighted by ``weight``."""
    values = next(iter(terms.values()))
    flat = _all_reduce_(_flat_terms(terms, weight, values), "the validation all-reduce")
    return dict(zip(terms, flat))


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch over every rank.

    In eval mode, outside a process group, or with ``sync`` False it is the plain BatchNorm.
    Statistics are computed in float32 (also under autocast) in two passes, as torch's kernels do.
    """

    sync = True

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.sync and is_active()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, x.size(1)] + [1] * (x.dim() - 2)
        xf = x.float()
        count = xf.new_full((1,), float(x.numel() // x.size(1)))
        totals = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))  # (C + 1,)
        n = totals[-1]
        mean = totals[:-1] / n
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims)) / n  # biased, as used to normalise
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)  # unbiased, as torch
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a :class:`GlobalBatchNorm` sharing its tensors.

    Returns:
        ``module`` itself (changed in place), or the new layer when ``module`` is a BatchNorm.
    """
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_batchnorm(child))
    return out


def set_batchnorm_sync(module: nn.Module, sync: bool) -> None:
    """Turn the pooling of statistics of every :class:`GlobalBatchNorm` in ``module`` on or off."""
    for m in module.modules():
        if isinstance(m, GlobalBatchNorm):
            m.sync = sync


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of rank ``rank``'s torch generator (dropout) from ``epoch`` on: a pure function, so a resume repeats it."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(epoch)]).generate_state(1)[0])
