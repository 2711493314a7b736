"""The trainer: ``python -m train --config=configs/<name>.py --workdir=DIR``.

``train.train.train_and_evaluate(config, workdir)`` is the whole run, importable for tests and
notebooks; ``python -m train.launch`` starts a multi-process job on one machine. This package
imports nothing heavy, so that ``python -m train`` can set up JAX's devices before JAX starts.
"""
