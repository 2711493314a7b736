"""Every hyper-parameter of the trainer, with its default; the other configs override a few.

Run a config with `python -m train --config=configs/<name>.py --workdir=DIR`, overriding any field
on the command line: `--config.learning_rate=3e-3 --config.vote.strategy=alltoall`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Data: a tfds name read TF-free with tfds.data_source (array_record files in data_dir).
  # "sklearn_digits" is the project's own builder, prepared offline on first use.
  config.dataset = "sklearn_digits"
  config.data_dir = ""  # "" is tfds' default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  config.train_split = "train"  # The split trained on.
  config.eval_split = "test"  # The split evaluated (ImageNet: "validation").
  config.num_data_threads = 4  # grain threads reading and preprocessing examples per process.
  config.image_size = 224  # Crop size for datasets whose images vary in size (ImageNet).
  config.manual_dir = ""  # wikitext103: the folder holding wiki.{train,valid,test}.tokens.
  config.bptt = 140  # wikitext103: words per training window.

  # Model (train/models.py): digits_cnn, resnet18_cifar, resnet18, resnet50, alexnet or qrnn.
  config.model = "digits_cnn"
  config.width = 16  # Channels of the first layer (ResNets and AlexNet: 64 as published; qrnn: embedding).
  config.qrnn_hidden = 2500  # qrnn: width of the hidden layers.
  config.qrnn_layers = 4  # qrnn: number of QRNN layers.
  config.dropout_rate = 0.0  # AlexNet's dropout before its dense layers (0.5 as published).
  config.compute_dtype = "float32"  # Or "bfloat16": activations and matmuls; parameters stay float32.

  # Workers: one per device (CPU: simulated devices, set by `python -m train`; GPU: real ones),
  # spread evenly over the processes of a multi-host job.
  config.num_workers = 8
  # A hierarchical vote's hosts: this many workers psum their momentum before voting (0: a process's).
  config.workers_per_host = 0
  config.per_worker_batch_size = 32  # Examples per worker and step (the global batch: num_workers times it).
  # Global, rounded up to a multiple of num_workers; the last eval batch is padded and masked.
  config.eval_batch_size = 256

  # Optimizer: "signum" (Signum with majority vote), "lion" (Lion's signs voted, signvote_jax.lion),
  # or "sgd" / "adam" over mean_allreduce.
  config.optimizer = "signum"
  config.learning_rate = 1e-4  # The paper's default for Signum.
  config.b1 = 0.9  # Signum and SGD momentum; Adam's first moment.
  config.b2 = 0.999  # Adam's second moment; Lion's momentum decay (Lion's paper: 0.99).
  # signum: decoupled, x <- x - lr * (vote + weight_decay * x); adam: decoupled too (AdamW);
  # sgd: L2, weight_decay * x added to the gradient before the momentum (as torch.optim.SGD).
  config.weight_decay = 0.0

  # The vote of signum and lion: the fields of signvote_jax.Vote, passed straight through (the trainer
  # adds the mesh's axes, the worker count and faults.voter_kind's voters).
  config.vote = ml_collections.ConfigDict()
  config.vote.strategy = "allgather"  # How the sign words travel: allgather, alltoall or hierarchical.
  config.vote.outer_strategy = "allgather"  # hierarchical only: the vote across hosts, allgather or alltoall.
  # Voters of each alltoall shard (odd, 1..M; the median of their results): 3 survives one worker
  # lying in every role it plays, for 3x alltoall's traffic (DESIGN.md, threat model).
  config.vote.replicas = 1
  config.vote.impl = "auto"  # Sign packing and vote kernels: auto, jax or triton.

  # Learning-rate schedule: linear warm-up from 0, then step decay (the paper's ImageNet recipe).
  config.warmup_epochs = 0.0
  config.lr_decay_every_epochs = 0.0  # 0 turns the decay off.
  config.lr_decay_factor = 0.1  # What each decay multiplies the learning rate by.
  # A late phase with its own base learning rate and b1 (the paper's QRNN runs); 0 turns it off.
  config.late_from_epochs = 0.0
  config.late_learning_rate = 1e-4  # The late phase's base learning rate.
  config.late_b1 = 0.9  # The late phase's momentum.

  # Length: num_steps if positive, else num_epochs passes over the training split.
  config.num_steps = -1
  config.num_epochs = 1.0  # Passes over the training split, when num_steps is not positive.

  # Faulty workers (signvote_jax.faults.byzantine), the last num_faulty workers along the axis.
  # A fault experiment may produce non-finite losses; any other run stops at the first one.
  config.faults = ml_collections.ConfigDict()
  config.faults.kind = ""  # "" (none), negate, random, zero, nan, scale or equivocate.
  config.faults.num_faulty = 0  # How many workers (the last ones) send faulty ballots.
  # Faulty voters of alltoall shards (signvote_jax.faults.voter), the last num_faulty_voters workers:
  # "" (none), negate, random, zero, blame, or a lie joined with blame ("negate+blame").
  config.faults.voter_kind = ""
  config.faults.num_faulty_voters = 0  # How many workers (the last ones) lie as voters.

  config.seed = 0  # Parameter init, data order and random faults.
  config.log_every = 10  # Steps between train-metric lines in metrics.jsonl.
  config.eval_every = 100  # Steps between evaluations (and at the end).
  # Steps between Orbax checkpoints (and at the end); 0: none (benchmarks: a save gathers the whole
  # state on every process, which over a slow link costs as much as many steps).
  config.checkpoint_every = 200
  config.checkpoints_to_keep = 2  # The newest checkpoints kept; older ones are deleted.
  # Progress on stderr: a bar on a terminal, a line per logged record in a log file; False: none.
  config.progress_bar = True
  return config
