"""The baseline of qrnn_wikitext103_signum.py: Adam over an all-reduce, lr 1e-3 then 1e-4, b1 0.9.

  python -m train --config=configs/qrnn_wikitext103_adam.py --workdir=runs/qrnn_adam \
      --config.data_dir=DATA --config.manual_dir=PATH/wikitext-103
"""

from configs import qrnn_wikitext103_signum


def get_config():
  config = qrnn_wikitext103_signum.get_config()
  config.optimizer = "adam"
  config.b1 = 0.9
  return config
