"""ImageNet-A and ImageNet-R: 200-class subsets scored with a 1000-way classifier.

A model trained on ImageNet-1k predicts one of 1000 classes; ImageNet-A and -R each
cover 200 of them. Scored naively, every prediction outside the 200 is wrong, so the
1000-way logits are restricted to the set's 200 classes before the argmax. The 200
classes are the wnid folders of the released dataset; their 1000-way indices follow
ImageNet-1k's sorted-wnid order (timm's ``ImageNetInfo``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def imagenet1k_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def imagenet1k_indices(wnids: Sequence[str]) -> list[int]:
    """The 1000-way class index of each wnid (unknown wnids are an error naming them)."""
    position = {wnid: i for i, wnid in enumerate(imagenet1k_wnids())}
    unknown = [w for w in wnids if w not in position]
    if unknown:
        raise ValueError(f"not ImageNet-1k classes: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return [position[w] for w in wnids]


def restricted_predictions(logits: Tensor, class_indices: Sequence[int]) -> Tensor:
    """``argmax`` over the logits of ``class_indices`` only: a position in ``class_indices``."""
    index = torch.as_tensor(list(class_indices), device=logits.device, dtype=torch.long)
    return logits.index_select(-1, index).argmax(-1)
