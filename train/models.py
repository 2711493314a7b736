"""Flax models, chosen by ``config.model``; ``config.width`` scales their channels (QRNN: its embedding).

Every model takes ``(images, train)``: batch statistics (ResNets) are computed on the worker's own
batch while training and read from the running averages otherwise; dropout (AlexNet) draws from
the ``"dropout"`` rng while training. ``dtype`` is the compute dtype; parameters stay float32.
"""

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from train.errors import ConfigError


class DigitsCNN(nn.Module):
  """A small CNN for 8x8 digits: two 3x3 convolutions (the second with stride 2), a linear head."""

  num_classes: int
  width: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train
    x = nn.relu(nn.Conv(self.width, (3, 3), dtype=self.dtype)(images))
    x = nn.relu(nn.Conv(2 * self.width, (3, 3), strides=2, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x.reshape(x.shape[0], -1)).astype(jnp.float32)


class DigitsMLP(nn.Module):
  """Two hidden layers of ``width`` units on the flattened image: about ``width**2`` parameters,
  almost all in the square middle layer, and little compute per parameter (a communication-heavy
  model: ``configs/digits_wide.py``)."""

  num_classes: int
  width: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train
    x = images.reshape(images.shape[0], -1)
    for _ in range(2):
      x = nn.relu(nn.Dense(self.width, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class ResidualBlock(nn.Module):
  """Two 3x3 convolutions with a shortcut (ResNet-18/34)."""

  filters: int
  strides: int
  conv: Callable
  norm: Callable

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(x)))
    y = self.norm(scale_init=nn.initializers.zeros)(self.conv(self.filters, (3, 3))(y))
    if x.shape != y.shape:
      x = self.norm()(self.conv(self.filters, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class BottleneckBlock(nn.Module):
  """1x1, 3x3, 1x1 convolutions with a shortcut, four times wider out (ResNet-50 and up)."""

  filters: int
  strides: int
  conv: Callable
  norm: Callable

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.norm(scale_init=nn.initializers.zeros)(self.conv(4 * self.filters, (1, 1))(y))
    if x.shape != y.shape:
      x = self.norm()(self.conv(4 * self.filters, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet (He et al., 2016); ``cifar_stem`` is the 32x32 variant: a 3x3 stem and no max-pool."""

  stage_sizes: Sequence[int]
  block: type
  num_classes: int
  width: int = 64
  cifar_stem: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, padding="SAME")
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    if self.cifar_stem:
      x = nn.relu(norm()(conv(self.width, (3, 3))(images)))
    else:
      x = nn.relu(norm()(conv(self.width, (7, 7), 2)(images)))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = self.block(self.width * 2**stage, strides, conv=conv, norm=norm)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class AlexNet(nn.Module):
  """AlexNet (Krizhevsky et al., 2012) in its one-tower form, with channels scaled by ``width / 64``."""

  num_classes: int
  width: int = 64
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    scale = self.width / 64
    conv = functools.partial(nn.Conv, dtype=self.dtype)
    pool = functools.partial(nn.max_pool, window_shape=(3, 3), strides=(2, 2))
    # The published padding: 224 px in, 6x6x256 before the dense layers (as in torchvision).
    x = pool(nn.relu(conv(round(64 * scale), (11, 11), 4, padding=2)(images)))
    x = pool(nn.relu(conv(round(192 * scale), (5, 5), padding=2)(x)))
    x = nn.relu(conv(round(384 * scale), (3, 3), padding=1)(x))
    x = nn.relu(conv(round(256 * scale), (3, 3), padding=1)(x))
    x = pool(nn.relu(conv(round(256 * scale), (3, 3), padding=1)(x)))
    x = x.reshape(x.shape[0], -1)
    for _ in range(2):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(round(4096 * scale), dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def fo_pool(forget, candidate, output):
  r"""QRNN fo-pooling along the time axis (axis 1), as one parallel scan.

  .. math::  c_t = f_t \odot c_{t-1} + (1 - f_t) \odot z_t, \qquad h_t = o_t \odot c_t, \qquad c_0 = 0

  The recurrence is linear in ``c``, so it is an associative scan over pairs ``(a, b)`` meaning
  ``c -> a c + b``, composed as ``(a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)``.
  """

  def compose(first, second):
    (a1, b1), (a2, b2) = first, second
    return a1 * a2, a2 * b1 + b2

  _, cells = jax.lax.associative_scan(compose, (forget, (1 - forget) * candidate), axis=1)
  return output * cells


class QRNNLayer(nn.Module):
  """A quasi-recurrent layer (Bradbury et al., 2017): gates from a causal convolution, then fo-pooling."""

  features: int
  window: int = 1  # Time steps the gates' convolution sees (the current one and window - 1 before).
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    # Causal: pad window - 1 steps on the left only.
    gates = nn.Conv(3 * self.features, (self.window,), padding=((self.window - 1, 0),), dtype=self.dtype)(x)
    candidate, forget, output = jnp.split(gates.astype(jnp.float32), 3, axis=-1)
    return fo_pool(nn.sigmoid(forget), jnp.tanh(candidate), nn.sigmoid(output)).astype(self.dtype)


class QRNNLanguageModel(nn.Module):
  """Word-level QRNN language model: embedding, QRNN layers, and a decoder tied to the embedding.

  The last layer returns to the embedding width so that the decoder can share the embedding
  matrix (Merity et al., 2018). The first layer's gates see two words, the others one.
  """

  vocab_size: int
  embed: int = 400
  hidden: int = 2500
  num_layers: int = 4
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, ids, train: bool = False):
    embedding = nn.Embed(self.vocab_size, self.embed, dtype=self.dtype)
    x = embedding(ids)
    for layer in range(self.num_layers):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      width = self.embed if layer == self.num_layers - 1 else self.hidden
      x = QRNNLayer(width, window=2 if layer == 0 else 1, dtype=self.dtype)(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return embedding.attend(x).astype(jnp.float32)


MODELS = {
    "digits_cnn": lambda c, n, dtype: DigitsCNN(n, c.width, dtype),
    "digits_mlp": lambda c, n, dtype: DigitsMLP(n, c.width, dtype),
    "resnet18_cifar": lambda c, n, dtype: ResNet((2, 2, 2, 2), ResidualBlock, n, c.width, cifar_stem=True, dtype=dtype),
    "resnet18": lambda c, n, dtype: ResNet((2, 2, 2, 2), ResidualBlock, n, c.width, dtype=dtype),
    "resnet50": lambda c, n, dtype: ResNet((3, 4, 6, 3), BottleneckBlock, n, c.width, dtype=dtype),
    "alexnet": lambda c, n, dtype: AlexNet(n, c.width, c.dropout_rate, dtype),
    # width = embedding size; the hidden layers are config.qrnn_hidden wide.
    "qrnn": lambda c, n, dtype: QRNNLanguageModel(n, c.width, c.qrnn_hidden, c.qrnn_layers, c.dropout_rate, dtype),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(config, num_classes: int) -> nn.Module:
  if config.model not in MODELS:
    raise ConfigError(f"unknown model {config.model!r}; valid models are {sorted(MODELS)}.")
  if config.compute_dtype not in DTYPES:
    raise ConfigError(f"unknown compute_dtype {config.compute_dtype!r}; valid values are {sorted(DTYPES)}.")
  return MODELS[config.model](config, num_classes, DTYPES[config.compute_dtype])
