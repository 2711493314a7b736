"""AlexNet on ImageNet with Signum and majority vote: 7 workers of batch 64.

lr 1e-4, momentum 0.9, weight decay 1e-4, dropout 0.5; the schedule of resnet50_imagenet_signum.py.

  python -m train --config=configs/alexnet_imagenet_signum.py --workdir=runs/alexnet --config.data_dir=DATA
"""

from configs import resnet50_imagenet_signum


def get_config():
  config = resnet50_imagenet_signum.get_config()
  config.model = "alexnet"
  config.dropout_rate = 0.5
  config.per_worker_batch_size = 64
  config.eval_batch_size = 7 * 64
  config.eval_every = 2860  # About one epoch: 1,281,167 / 448 steps.
  config.checkpoint_every = 2860
  return config
