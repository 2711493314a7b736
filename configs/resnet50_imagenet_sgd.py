"""The baseline of resnet50_imagenet_signum.py: SGD with momentum over an all-reduce.

Same model, data, workers and schedule; lr 0.1, momentum 0.9, weight decay 1e-4.

  python -m train --config=configs/resnet50_imagenet_sgd.py --workdir=runs/r50_sgd --config.data_dir=DATA
"""

from configs import resnet50_imagenet_signum


def get_config():
  config = resnet50_imagenet_signum.get_config()
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.b1 = 0.9
  return config
