"""One run on N processes through torch.distributed, as `torchrun` starts them.

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT): NCCL when the run uses CUDA, gloo on the CPU, one device per
LOCAL_RANK. Without WORLD_SIZE > 1 every helper here is the single-process identity, so
the code paths that call them are the same in both cases.

Rules the callers keep: rank 0 alone touches the output folder and the caches (it reads
and writes them; the others get what it read through the process group: `on_main`);
every rank computes the same thing from the same data except where a loader is sharded,
and a sharded pass is gathered back (`gather_shards`) before anything depends on it.
"""
import os

import torch
import torch.distributed as dist
import torch.nn as nn


class DistributedError(ValueError):
    """A run that cannot be distributed as asked: the message says what to do."""


def requested_world_size():
    """WORLD_SIZE from the environment (1 when not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank():
    """RANK from the environment (0 when not started by torchrun), known before `setup`."""
    return int(os.environ.get("RANK", "0"))


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def rank():
    return dist.get_rank() if is_distributed() else 0


def local_rank():
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main():
    return rank() == 0


def backend_name():
    return dist.get_backend() if is_distributed() else "none"


def setup(use_cuda=True, engine="builtin"):
    """Join torchrun's process group when WORLD_SIZE > 1 (a no-op otherwise); returns
    the world size. NCCL when CUDA is used (USE_CUDA and a GPU), else gloo."""
    size = requested_world_size()
    if size <= 1 or is_distributed():
        return world_size()
    if engine != "builtin":
        raise DistributedError(
            f"WORLD_SIZE={size}: the Dassl engine trains in one process only. Run one process (python train.py, "
            "or GPUS=1), or set LECLIP_ENGINE=builtin to train on several processes with LE-CLIP's engine"
        )
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return world_size()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device(use_cuda=True):
    """This process's device: cuda:LOCAL_RANK when CUDA is used, else the CPU."""
    if use_cuda and torch.cuda.is_available():
        return torch.device("cuda", local_rank()) if is_distributed() else torch.device("cuda")
    return torch.device("cpu")


def barrier():
    if is_distributed():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn):
    """fn() on rank 0 only; its result, or the exception it raised, on every rank.
    For what reads or writes the output folder: the other ranks wait, never touch it,
    and fail with the same error when rank 0 does (no rank is left waiting)."""
    if not is_distributed():
        return fn()
    outcome = None
    if is_main():
        try:
            outcome = (True, fn())
        except Exception as err:  # handed to every rank, then raised everywhere
            outcome = (False, err)
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def in_turn(fn):
    """fn() on rank 0 first, then on the first process of every other node, then on the
    rest: what prepares shared files (a rendered dataset, a split cache) is done once per
    file system before anyone reads it."""
    if not is_distributed():
        return fn()
    result = None
    for turn in (is_main(), local_rank() == 0 and not is_main(), local_rank() != 0):
        if turn:
            result = fn()
        barrier()
    return result


def all_gather_object(obj):
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard_positions(count, shard_rank=None, shards=None):
    """Positions 0..count-1 of a global order that one rank reads: rank r takes r, r+N, ...
    With a global batch B = N b, the k-th batches of the N ranks together are the k-th
    global batch (positions kB..kB+B-1), so N processes see the 1-process batches."""
    shard_rank = rank() if shard_rank is None else shard_rank
    shards = world_size() if shards is None else shards
    return range(shard_rank, count, shards)


def gather_shards(local):
    """A tensor whose rows a sharded loader produced on each rank (rank r: rows r, r+N, ...
    of the global order, see `shard_positions`) -> all the rows in the global order, on
    every rank, on the CPU."""
    local = local.detach().cpu()
    if not is_distributed():
        return local
    return interleave(all_gather_object(local))


def interleave(parts):
    """[rows of rank 0, rows of rank 1, ...] (see `shard_positions`) -> the global order."""
    out = parts[0].new_empty((sum(len(part) for part in parts), *parts[0].shape[1:]))
    for shard_rank, part in enumerate(parts):
        out[shard_rank::len(parts)] = part
    return out


def gather_rows(values, index, total):
    """Rows computed on each rank for dataset indices `index` -> a [total, ...] tensor with
    row index[i] = values[i], on every rank (rows nobody computed stay zero)."""
    values, index = values.detach().cpu(), index.detach().cpu().long()
    out = values.new_zeros((total, *values.shape[1:]))
    for part_values, part_index in all_gather_object((values, index)):
        out[part_index] = part_values
    return out


def sum_over_ranks(numbers):
    """Element-wise sum of a list of numbers over every rank."""
    if not is_distributed():
        return list(numbers)
    return [sum(column) for column in zip(*all_gather_object(list(numbers)))]


def gather_cat(local):
    """The concatenation of every rank's tensor (rank order), on every rank, on the CPU;
    for order-free statistics such as a quantile of the global batch."""
    local = local.detach().cpu()
    if not is_distributed():
        return local
    return torch.cat(all_gather_object(local))


# ---------------------------------------------------------------- training
class _Step(nn.Module):
    """The registered modules as one module whose forward is the trainer's loss: DDP
    sees one forward and one backward per step, however often the step calls each
    module (prompt learners, adapters, FixMatch's weak and strong views)."""

    def __init__(self, modules, loss_fn):
        super().__init__()
        self.learnable = nn.ModuleDict(modules)
        self.loss_fn = loss_fn

    def forward(self, *args):
        return self.loss_fn(*args)


def data_parallel_step(modules, loss_fn, find_unused_parameters=False):
    """DistributedDataParallel over the trainable parameters of `modules` ({name: module})
    only (the frozen CLIP stays outside it); calling the result runs loss_fn(*args) and
    its backward averages the gradients over the ranks. None when not distributed or
    when nothing trains. Buffers are not synchronised per step: every rank holds the same
    (prompt token embeddings; batch norm statistics are global, `global_batch_norm`).
    `find_unused_parameters`: a method whose steps may leave a trainable parameter
    without a gradient must say so (DDP stops with an error otherwise)."""
    trainable = {name: m for name, m in modules.items() if any(p.requires_grad for p in m.parameters())}
    if not is_distributed() or not trainable:
        return None
    return nn.parallel.DistributedDataParallel(
        _Step(trainable, loss_fn), find_unused_parameters=find_unused_parameters, forward_sync_buffers=False
    )


class _SumOverRanks(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of every rank's input is the sum of
    the ranks' output gradients (each rank's loss depends on every rank's input)."""

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch (all ranks),
    with gradients through them: N processes train as one on the same global batch.
    torch's SyncBatchNorm does this on GPUs only; this one runs on any backend (gloo).
    Same parameters, buffers and state-dict keys as the BatchNorm it replaces."""

    def forward(self, x):
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        mean = _SumOverRanks.apply(x.sum(dims)) / count
        centered = x - mean.view(shape)
        var = _SumOverRanks.apply((centered * centered).sum(dims)) / count  # two passes, as batch_norm
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / max(float(count) - 1.0, 1.0))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        return y


def global_batch_norm(module):
    """`module` with every BatchNorm2d computing global-batch statistics when the run is
    distributed (torch's SyncBatchNorm on CUDA, `GlobalBatchNorm` elsewhere); the same
    module, unchanged, in one process. Parameters are kept (an optimizer built before
    stays valid)."""
    if not is_distributed():
        return module
    if any(p.is_cuda for p in module.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    _replace_batch_norms(module)
    return module


def _replace_batch_norms(module):
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)
            replacement._parameters, replacement._buffers = child._parameters, child._buffers
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            _replace_batch_norms(child)
