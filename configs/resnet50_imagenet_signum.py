"""ResNet-50 on ImageNet with Signum and majority vote: the paper's Figure 3 setup.

7 workers of batch 128; lr 1e-4, momentum 0.9, weight decay 1e-4; 5 epochs of linear warm-up,
then lr / 10 every 30 epochs; 80 epochs. Prepare ImageNet once (manual download):

  tfds build imagenet2012 --file_format=array_record --manual_dir=DIR --data_dir=DATA

One host with 7 GPUs:
  python -m train --config=configs/resnet50_imagenet_signum.py --workdir=runs/r50_signum --config.data_dir=DATA
Several hosts (process i of N, each with 7 / N of the workers):
  python -m train --config=configs/resnet50_imagenet_signum.py --workdir=runs/r50_signum \
      --config.data_dir=DATA --coordinator_address=HOST0:1234 --num_processes=N --process_id=i
Baseline: configs/resnet50_imagenet_sgd.py; adversary: configs/resnet50_imagenet_adversary.py.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "imagenet2012"
  config.eval_split = "validation"
  config.image_size = 224
  config.model = "resnet50"
  config.width = 64
  config.num_workers = 7
  config.per_worker_batch_size = 128
  config.eval_batch_size = 7 * 128
  config.optimizer = "signum"
  config.learning_rate = 1e-4
  config.b1 = 0.9
  config.weight_decay = 1e-4
  config.warmup_epochs = 5.0
  config.lr_decay_every_epochs = 30.0
  config.lr_decay_factor = 0.1
  config.num_epochs = 80.0
  config.num_data_threads = 16
  config.log_every = 100
  config.eval_every = 1430  # About one epoch: 1,281,167 / 896 steps.
  config.checkpoint_every = 1430
  return config
