"""Out-of-distribution sets for the digits, built from what scikit-learn bundles (split "test", 360 images each).

Toy stand-ins for seed000 §3's protocol (whose OOD sets are the other CIFAR/SVHN/MNIST test sets); every set is
fixed by a documented seed, grey, 32x32 and repeated to three channels like the digits:
- photos: 64x64 crops at uniform random positions of scikit-learn's sample photographs (china.jpg, flower.jpg,
  alternating), made grey by averaging R, G and B, scaled to [0, 1] and downsampled to 32x32 by 2x2 averaging
  (far OOD: natural textures);
- digits_rot90: the 360 test digits rotated by 90 degrees counter-clockwise (near OOD: same strokes and
  statistics, other shapes; `datasets.near_ood("digits")`);
- uniform: independent U[0, 1] pixels (far OOD: noise).
"""
from __future__ import annotations

import torch

from datasets.base import to_rgb32
from datasets.digits import load_digits_split

OOD_SEED = 1234
OOD_SIZE = 360
CROP = 64


def photo_patches(channels: int = 3) -> torch.Tensor:
    """The `photos` set: grey 64x64 crops of the sample photographs, downsampled to 32x32 (module docstring).

    Returns:
      (360, channels, 32, 32) float32 in [0, 1].
    """
    from sklearn.datasets import load_sample_images

    photos = torch.stack([torch.tensor(img, dtype=torch.float32).mean(-1) / 255.0
                          for img in load_sample_images().images])  # (2, 427, 640), both photos have one size
    _, height, width = photos.shape
    generator = torch.Generator().manual_seed(OOD_SEED)
    top = torch.randint(0, height - CROP + 1, (OOD_SIZE, 1, 1), generator=generator)
    left = torch.randint(0, width - CROP + 1, (OOD_SIZE, 1, 1), generator=generator)
    which = (torch.arange(OOD_SIZE) % len(photos))[:, None, None]
    offsets = torch.arange(CROP)
    crops = photos[which, top + offsets[:, None], left + offsets[None, :]]  # (360, 64, 64)
    grey = torch.nn.functional.avg_pool2d(crops[:, None], 2)  # (360, 1, 32, 32)
    return to_rgb32(grey, channels)


def digits_rot90(channels: int = 3) -> torch.Tensor:
    """The `digits_rot90` set: the test digits rotated by 90 degrees counter-clockwise.

    Returns:
      (360, channels, 32, 32) float32 in [0, 1].
    """
    images, _ = load_digits_split("test", channels)
    return torch.rot90(images, 1, dims=(2, 3)).contiguous()


def uniform_noise(channels: int = 3) -> torch.Tensor:
    """The `uniform` set: U[0, 1] grey pixels, repeated to `channels` channels.

    Returns:
      (360, channels, 32, 32) float32 in [0, 1).
    """
    generator = torch.Generator().manual_seed(OOD_SEED)
    grey = torch.rand(OOD_SIZE, 1, 32, 32, generator=generator)
    return grey.repeat(1, channels, 1, 1)


DIGITS_OOD = {"photos": photo_patches, "digits_rot90": digits_rot90, "uniform": uniform_noise}
