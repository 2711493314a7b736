"""resnet50_imagenet_signum.py with 3 of its 7 workers negating their sign (the paper's Figure 4).

Weight decay is off, as in the paper's robustness runs. The vote should still train; the trainer's
agreement statistics should name workers 4, 5 and 6.

  python -m train --config=configs/resnet50_imagenet_adversary.py --workdir=runs/r50_adv --config.data_dir=DATA
"""

from configs import resnet50_imagenet_signum


def get_config():
  config = resnet50_imagenet_signum.get_config()
  config.weight_decay = 0.0
  config.faults.kind = "negate"
  config.faults.num_faulty = 3
  return config
