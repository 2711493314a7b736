"""Per-example image transforms in numpy (grain calls them in its reader threads).

Training transforms take a ``np.random.Generator`` that grain seeds from the example's position in
the stream, so a resumed run draws the same crops and flips again.
"""

import math

import numpy as np
from PIL import Image

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def normalize(image: np.ndarray, mean, std, max_pixel: float = 255.0) -> np.ndarray:
  return ((image.astype(np.float32) / max_pixel - np.float32(mean)) / np.float32(std)).astype(np.float32)


def flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Left-right mirror with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def pad_crop(image: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
  """Zero-pad by ``pad`` on each side, then a random crop of the original size (CIFAR)."""
  height, width = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  top, left = rng.integers(0, 2 * pad + 1, size=2)
  return padded[top : top + height, left : left + width]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        area=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10) -> np.ndarray:
  """A crop of random area and aspect ratio, resized to ``size`` square (Szegedy et al., 2015).

  After ``tries`` crops that do not fit, the centre crop of the whole image is used.
  """
  height, width = image.shape[:2]
  for _ in range(tries):
    target = rng.uniform(*area) * height * width
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    h, w = round(math.sqrt(target / aspect)), round(math.sqrt(target * aspect))
    if 0 < h <= height and 0 < w <= width:
      top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
      return resize(image[top : top + h, left : left + w], size, size)
  return center_crop(image, size, crop_fraction=1.0)


def center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
  """The central square of ``crop_fraction`` of the shorter side, resized to ``size`` (evaluation)."""
  height, width = image.shape[:2]
  side = max(1, round(min(height, width) * crop_fraction))
  top, left = (height - side) // 2, (width - side) // 2
  return resize(image[top : top + side, left : left + side], size, size)
