"""Flax models, chosen by ``config.model``."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from train.errors import ConfigError


class DigitsCNN(nn.Module):
  """A small CNN for 8x8 digits: 3x3 convolutions (the later ones with stride 2), then a linear head."""

  num_classes: int
  features: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    x = images
    for i, features in enumerate(self.features):
      x = nn.relu(nn.Conv(features, (3, 3), strides=1 if i == 0 else 2)(x))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


MODELS = {"digits_cnn": lambda config, num_classes: DigitsCNN(num_classes, tuple(config.model_features))}


def create_model(config, num_classes: int) -> nn.Module:
  if config.model not in MODELS:
    raise ConfigError(f"unknown model {config.model!r}; valid models are {sorted(MODELS)}.")
  return MODELS[config.model](config, num_classes)
