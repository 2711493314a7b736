"""ResNet-18 (CIFAR variant) on CIFAR-10 with Signum and majority vote.

8 workers of batch 16 (global 128); lr 1e-4, momentum 0.9, weight decay 5e-4; lr / 10 at epochs
100 and 200 (every 100 epochs), 250 epochs. Prepare CIFAR-10 once:

  tfds build cifar10 --file_format=array_record --data_dir=DATA
  python -m train --config=configs/resnet18_cifar10_signum.py --workdir=runs/r18_signum --config.data_dir=DATA

Baseline: configs/resnet18_cifar10_sgd.py.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "cifar10"
  config.eval_split = "test"
  config.model = "resnet18_cifar"
  config.width = 64
  config.num_workers = 8
  config.per_worker_batch_size = 16
  config.eval_batch_size = 512
  config.optimizer = "signum"
  config.learning_rate = 1e-4
  config.b1 = 0.9
  config.weight_decay = 5e-4
  config.lr_decay_every_epochs = 100.0
  config.lr_decay_factor = 0.1
  config.num_epochs = 250.0
  config.log_every = 50
  config.eval_every = 390  # One epoch: 50,000 / 128 steps.
  config.checkpoint_every = 390
  return config
