"""Each model's shapes, parameter count (against the published architectures), dtypes and gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from train import models


def _config(model, width, compute_dtype="float32", dropout_rate=0.0):
  return ml_collections.ConfigDict({"model": model, "width": width, "compute_dtype": compute_dtype,
                                    "dropout_rate": dropout_rate, "qrnn_hidden": 2 * width, "qrnn_layers": 2})


def _num_params(model, image_shape):
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)))
  return sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    "name, expected",
    # torchvision's counts for the same architectures at 1000 classes.
    [("resnet18", 11_689_512), ("resnet50", 25_557_032), ("alexnet", 61_100_840)],
)
def test_published_sizes(name, expected):
  assert _num_params(models.create_model(_config(name, 64), 1000), (224, 224, 3)) == expected


# (model, width, input shape, compute dtype): small enough to compile quickly on the CPU, and
# bfloat16 compute on two of them (XLA's CPU convolutions in bfloat16 are slow to compile).
SMALL = [
    ("digits_cnn", 4, (8, 8, 1), "float32"),
    ("digits_mlp", 8, (8, 8, 1), "float32"),
    ("resnet18_cifar", 4, (32, 32, 3), "bfloat16"),
    ("resnet18", 4, (32, 32, 3), "float32"),
    ("resnet50", 2, (32, 32, 3), "float32"),
    ("alexnet", 4, (64, 64, 3), "bfloat16"),
    ("qrnn", 8, (6,), "bfloat16"),
]


@pytest.mark.parametrize("name, width, shape, compute_dtype", SMALL)
def test_forward_and_backward(name, width, shape, compute_dtype):
  model = models.create_model(_config(name, width, compute_dtype, dropout_rate=0.5), 10)
  if name == "qrnn":  # Word ids, and the logits are per word.
    images = jax.random.randint(jax.random.key(1), (3, *shape), 0, 10)
  else:
    images = jax.random.normal(jax.random.key(1), (3, *shape))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  params, model_state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))

  def loss(params):
    logits, new_state = model.apply({"params": params, **model_state}, images, train=True,
                                    rngs={"dropout": jax.random.key(2)}, mutable=list(model_state))
    return jnp.mean(logits**2), (logits, new_state)

  grads, (logits, new_state) = jax.jit(jax.grad(loss, has_aux=True))(params)
  assert logits.shape == ((3, 6, 10) if name == "qrnn" else (3, 10))
  assert logits.dtype == jnp.float32
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  if "resnet" in name:  # Training moved the running statistics.
    before, after = jax.tree.leaves(model_state), jax.tree.leaves(new_state)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
  else:
    assert model_state == {}


def test_dropout_draws_from_its_rng_while_training_only():
  model = models.create_model(_config("alexnet", 4, dropout_rate=0.5), 10)
  images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  variables = model.init(jax.random.key(0), images)
  run = lambda key, train: model.apply(variables, images, train=train, rngs={"dropout": jax.random.key(key)})
  assert not np.array_equal(run(1, True), run(2, True))
  np.testing.assert_array_equal(run(1, False), run(2, False))
