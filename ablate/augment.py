"""The paper's augmentation recipe through timm, scaled down for tiny images.

Per sample (in the loader's workers): timm's RandomResizedCrop, flip, RandAugment, ending at a
uint8 tensor (timm's "prefetcher" mode). Per batch, on the batch's device (:class:`BatchPrep`):
normalisation and random erasing. Mixup/CutMix and label smoothing are applied by the training
step (ablate.train).

Scaled down for tiny images (``img_size <= 64``), and why:
- RandomResizedCrop keeps at least 35% of the image (ImageNet: 8%): an 8% crop of a 32-pixel
  image is 9x9 pixels and no longer shows the object.
- No horizontal flip on digits: handwritten digits are not mirror-symmetric.
- Evaluation resizes the whole image (crop_pct 1.0) instead of resize-256/centre-crop-224,
  which would cut off the border of a 32-pixel digit.
RandAugment, colour jitter (which timm turns off when RandAugment is on, as in Swin), random
erasing, Mixup/CutMix and label smoothing keep the values of the RecipeConfig.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from ablate.config import DataConfig, RecipeConfig

TINY_IMAGE = 64  # at or below this side, the crop scale and eval crop are scaled down


def build_transforms(cfg: DataConfig, recipe: RecipeConfig) -> tuple[Callable, Callable]:
    """timm's per-sample train and eval transforms, scaled down for tiny images.

    They stop at a uint8 tensor (timm's "prefetcher" mode): normalisation and random erasing
    run on whole batches in :class:`BatchPrep`, after the batch is on its device.
    """
    from timm.data import create_transform

    tiny = cfg.img_size <= TINY_IMAGE
    train = create_transform(
        cfg.img_size, is_training=True, scale=(0.35, 1.0) if tiny else None,
        hflip=0.0 if cfg.name == "digits" else 0.5, color_jitter=recipe.color_jitter,
        auto_augment=recipe.randaugment or None, interpolation="bicubic", use_prefetcher=True)
    val = create_transform(cfg.img_size, is_training=False, interpolation="bicubic",
                           crop_pct=1.0 if tiny else None, use_prefetcher=True)
    for t in getattr(train, "transforms", []):
        for op in getattr(t, "ops", []):
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize
    return train, val


class BatchPrep:
    """uint8 batch -> normalised float batch on ``device`` (+ random erasing when training).

    Per batch rather than per sample: one vectorised op instead of 64 small ones, and 4x
    fewer bytes through the loader's queues and to the GPU. Erasing draws from the global
    python/torch RNGs, which the checkpoint saves.
    """

    def __init__(self, recipe: RecipeConfig, device: torch.device) -> None:
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        from timm.data.random_erasing import RandomErasing

        self.device = device
        self.mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_DEFAULT_STD, device=device).view(1, 3, 1, 1) * 255
        self.erase = (RandomErasing(recipe.reprob, mode="pixel", device=device.type)
                      if recipe.reprob > 0 else None)

    def __call__(self, x: torch.Tensor, *, train: bool) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        x = (x.float() - self.mean) / self.std
        return self.erase(x) if train and self.erase is not None else x


def _posterize(img: Image.Image, bits: int, **_: Any) -> Image.Image:
    """timm's posterize, also at 0 bits (an all-black image), which Pillow >= 11 rejects.

    RandAugment reaches 0 bits whenever "mstd" draws a magnitude >= 10.
    """
    from PIL import ImageOps

    if bits >= 8:
        return img
    return ImageOps.posterize(img, bits) if bits > 0 else Image.new(img.mode, img.size)
