"""The baseline of resnet18_cifar10_signum.py: SGD with momentum 0.9 and lr 0.1 over an all-reduce.

  python -m train --config=configs/resnet18_cifar10_sgd.py --workdir=runs/r18_sgd --config.data_dir=DATA
"""

from configs import resnet18_cifar10_signum


def get_config():
  config = resnet18_cifar10_signum.get_config()
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  return config
