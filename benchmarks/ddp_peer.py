"""The peer a PyTorch user would pick instead: DDP over gloo, plain all-reduce or the PowerSGD hook.

One process of a PyTorch job, started by :mod:`benchmarks.time_to_accuracy` in a host's network
namespace with the environment :func:`benchmarks.network.host_environment` gives the JAX trainer
(coordinator address, process count and id), so that both frameworks run over the same capped
links. It trains ``configs/digits_wide.py``'s workload as ``python -m train`` does and writes the
trainer's ``metrics.jsonl`` records, so that the benchmark reads both alike:

* the same model: the MLP of ``train/models.py`` (64 -> width -> width -> 10, ReLU), initialised as
  flax initialises ``nn.Dense`` (truncated-normal LeCun kernels, zero biases);
* the same data: scikit-learn's digits with the split of ``train/datasets/sklearn_digits.py``,
  pixels scaled to [0, 1]; each step a global batch of ``hosts x batch`` examples, host h taking
  rows ``[h b, (h+1) b)``, reshuffled every epoch (by numpy's generator: the same sampling as the
  JAX trainer's, not the same order);
* the same recipe: SGD with momentum (``torch.optim.SGD``, which is ``optax.sgd``'s update, L2 weight
  decay added to the gradient as the trainer does), linear warm-up and step decay of the config;
* its own exchange: ``--comm allreduce`` (DDP's default, float32) or ``--comm powersgd --rank r``
  (Vogels et al., NeurIPS 2019: rank-r factors with error feedback and warm start; the first
  step, which the hook requires, all-reduces). One bucket holds the whole model (on gloo, DDP with
  several buckets crashed or hung under PowerSGD).

``--faulty-nan`` makes the last process send NaN in place of its gradients, as the JAX trainer's
``faults.kind=nan`` does: the cost of averaging.

Run by the benchmark; by hand (4 hosts on this machine's loopback):

  JAX_COORDINATOR_ADDRESS=127.0.0.1:29500 JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=<h> \\
    python -m benchmarks.ddp_peer --workdir /tmp/ddp --comm powersgd --rank 4
"""

import argparse
import importlib
import json
import math
import os
import pathlib
import time

import numpy as np

from train import distributed


def wire_bytes(shapes, hosts: int, comm: str, rank: int) -> float:
  """Bytes each host sends per step, as the bandwidth-optimal ring sends them (as ``signvote_jax.hlo``
  counts the JAX collectives): an all-reduce of N bytes is ``2 (M - 1) / M N``.

  PowerSGD all-reduces, for each matrix of ``n x m`` that it compresses, the factors P (``n x r``)
  and Q (``m x r``), and the other tensors (biases, and matrices it would not shrink by more
  than 2x) as they are.
  """
  floats = 0
  for shape in shapes:
    size = math.prod(shape)
    if comm == "powersgd" and len(shape) == 2 and size > 2 * (shape[0] + shape[1]) * rank:
      floats += (shape[0] + shape[1]) * rank
    else:
      floats += size
  return 2 * (hosts - 1) / hosts * 4 * floats


def digits():
  """``(train_images, train_labels, test_images, test_labels)``: the embedded dataset's split."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  from train.datasets import sklearn_digits  # pylint: disable=import-outside-toplevel

  data = load_digits()
  split = sklearn_digits._split_indices(len(data.target))  # pylint: disable=protected-access
  images = (data.images.reshape(len(data.target), -1) / 16.0).astype(np.float32)
  return images[split["train"]], data.target[split["train"]], images[split["test"]], data.target[split["test"]]


def build_model(torch, width: int, seed: int):
  """flax ``nn.Dense`` layers as torch ``nn.Linear``: kernels from a truncated normal of variance
  1 / fan_in (truncated at 2 standard deviations, rescaled as flax does), biases 0."""
  torch.manual_seed(seed)
  layers = [torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
            torch.nn.Linear(width, 10)]
  for layer in layers:
    if isinstance(layer, torch.nn.Linear):
      std = math.sqrt(1.0 / layer.in_features) / 0.87962566103423978
      torch.nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
      torch.nn.init.zeros_(layer.bias)
  return torch.nn.Sequential(*layers)


def learning_rate(step: int, base: float, warmup: int, decay: int, factor: float) -> float:
  """``train/optimizers.py``'s schedule: linear warm-up from the first step, then step decay."""
  lr = base
  if warmup > 0:
    lr *= min(1.0, (step + 1) / warmup)
  if decay > 0:
    lr *= factor ** (step // decay)
  return lr


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--comm", choices=("allreduce", "powersgd"), default="allreduce")
  parser.add_argument("--rank", type=int, default=4, help="PowerSGD's matrix approximation rank")
  parser.add_argument("--faulty-nan", action="store_true", help="the last process sends NaN gradients")
  parser.add_argument("--config", default="digits_wide", help="the JAX trainer's config to mirror (configs/<name>.py)")
  parser.add_argument("--learning-rate", type=float, required=True)
  parser.add_argument("--batch", type=int, default=32, help="examples per host and step")
  parser.add_argument("--num-steps", type=int, required=True)
  parser.add_argument("--eval-every", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  import torch  # pylint: disable=import-outside-toplevel  (the test extra's CPU build)
  import torch.distributed as dist  # pylint: disable=import-outside-toplevel
  from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(1)  # One process per host, one thread each, as the JAX hosts run.
  config = importlib.import_module(f"configs.{args.config}").get_config()
  hosts, host = int(os.environ[distributed.ENV_NUM_PROCESSES]), int(os.environ[distributed.ENV_PROCESS_ID])
  dist.init_process_group("gloo", init_method=f"tcp://{os.environ[distributed.ENV_COORDINATOR]}", rank=host,
                          world_size=hosts)
  train_x, train_y, test_x, test_y = digits()
  model = build_model(torch, config.width, args.seed)
  size_mb = sum(p.numel() for p in model.parameters()) * 4 / 2**20
  ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=2 * size_mb + 1)
  if args.comm == "powersgd":
    state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=args.rank,
                                        start_powerSGD_iter=2, use_error_feedback=True, warm_start=True,
                                        random_seed=args.seed)
    hook = powerSGD_hook.powerSGD_hook
  else:
    state, hook = None, default_hooks.allreduce_hook
  if args.faulty_nan and host == hosts - 1:
    def nan_hook(hook_state, bucket, inner=hook):
      bucket.buffer().fill_(float("nan"))
      return inner(hook_state, bucket)
    ddp.register_comm_hook(state, nan_hook)
  else:
    ddp.register_comm_hook(state, hook)

  wire = wire_bytes([tuple(p.shape) for p in model.parameters()], hosts, args.comm, args.rank)
  global_batch = hosts * args.batch
  steps_per_epoch = len(train_y) // global_batch
  warmup = round(config.warmup_epochs * steps_per_epoch)
  decay = round(config.lr_decay_every_epochs * steps_per_epoch)
  opt = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=config.b1,
                        weight_decay=config.weight_decay)
  rng = np.random.default_rng(args.seed)
  order = np.zeros(0, np.int64)
  test_x, test_y = torch.from_numpy(test_x), torch.from_numpy(test_y)
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  metrics = open(workdir / "metrics.jsonl", "a", encoding="utf-8") if host == 0 else None
  trained = 0.0

  def record(entry):
    if metrics is not None:
      metrics.write(json.dumps(entry) + "\n")
      metrics.flush()

  for step in range(args.num_steps):
    if len(order) < global_batch:
      order = np.concatenate([order, rng.permutation(len(train_y))])
    rows, order = order[:global_batch][host * args.batch : (host + 1) * args.batch], order[global_batch:]
    start = time.perf_counter()
    for group in opt.param_groups:
      group["lr"] = learning_rate(step, args.learning_rate, warmup, decay, config.lr_decay_factor)
    opt.zero_grad()
    logits = ddp(torch.from_numpy(train_x[rows]))
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(train_y[rows]))
    loss.backward()  # DDP exchanges the gradients here, through the hook.
    opt.step()
    trained += time.perf_counter() - start
    done = step + 1
    if done % args.eval_every == 0 or done == args.num_steps:
      first = {"compile_seconds": 0.0, "wire_bytes_per_host": wire} if done == args.eval_every else {}
      record({"step": done, "split": "train", "train_seconds": trained, "loss": loss.item(), **first})
      with torch.no_grad():
        accuracy = float((model(test_x).argmax(-1) == test_y).float().mean())
      record({"step": done, "split": "test", "train_seconds": trained, "accuracy": accuracy})
  dist.destroy_process_group()


if __name__ == "__main__":
  main()
