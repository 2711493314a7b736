"""A 4-layer QRNN language model on WikiText-103 with Signum and majority vote (the paper's Figure 5).

3 workers of batch 60, BPTT 140 words; embedding 400, hidden 2500, dropout 0.1, no weight decay;
lr 1e-3 with b1 0.5 first, then lr 1e-4 with b1 0.9, as the paper's code did (its launch scripts
do not show when it switched: here after the first epoch); 12 epochs. Full softmax over the
267,735-word vocabulary, decoder tied to the embedding. Build the dataset once from the unpacked
wikitext-103 folder (it holds wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens):

  python -m train --config=configs/qrnn_wikitext103_signum.py --workdir=runs/qrnn_signum \
      --config.data_dir=DATA --config.manual_dir=PATH/wikitext-103
Three hosts, one worker each:
  python -m train --config=configs/qrnn_wikitext103_signum.py --workdir=runs/qrnn_signum \
      --config.data_dir=DATA --coordinator_address=HOST0:1234 --num_processes=3 --process_id=i
Baseline: configs/qrnn_wikitext103_adam.py.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "wikitext103"
  config.eval_split = "validation"
  config.bptt = 140
  config.model = "qrnn"
  config.width = 400
  config.qrnn_hidden = 2500
  config.qrnn_layers = 4
  config.dropout_rate = 0.1
  config.num_workers = 3
  config.per_worker_batch_size = 60
  config.eval_batch_size = 3 * 60
  config.optimizer = "signum"
  config.learning_rate = 1e-3
  config.b1 = 0.5
  config.weight_decay = 0.0
  config.late_from_epochs = 1.0
  config.late_learning_rate = 1e-4
  config.late_b1 = 0.9
  config.num_epochs = 12.0
  config.log_every = 100
  config.eval_every = 1000
  config.checkpoint_every = 1000
  return config
