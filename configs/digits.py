"""The README's main job: a small CNN on scikit-learn's digits, 8 simulated workers, Signum vote.

  python -m train --config=configs/digits.py --workdir=/tmp/digits

About 20 seconds on a 2-core CPU (plus building the dataset once); reaches >= 95 % test accuracy.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.optimizer = "signum"
  config.learning_rate = 3e-3
  config.b1 = 0.9
  config.weight_decay = 1e-4
  config.num_workers = 8
  config.per_worker_batch_size = 16
  config.num_steps = 300
  config.warmup_epochs = 1.0  # 11 steps: 1,437 examples / global batch 128.
  config.lr_decay_every_epochs = 15.0  # lr / 10 after step 165.
  config.eval_every = 50
  config.checkpoint_every = 100
  return config
