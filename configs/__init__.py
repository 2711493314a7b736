"""ml_collections configs for `python -m train --config=configs/<name>.py`; each overrides default.py."""
