"""Register your own loss and train with it composed with the built-in ones.

    python examples/custom_loss.py
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.train.config import TrainConfig
from edgeseg.data import IGNORE_INDEX
from edgeseg.losses import LOSSES
from edgeseg.train.loop import train


@LOSSES.register("label_smoothing_ce")
class LabelSmoothingCE(nn.Module):
    """Cross-entropy with label smoothing; every loss takes (logits, target, dist=None)."""

    def __init__(self, num_classes: int, smoothing: float = 0.1) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, dist=None) -> torch.Tensor:
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, label_smoothing=self.smoothing)


if __name__ == "__main__":
    cfg = TrainConfig(model="unet", model_kwargs={"base": 8, "depth": 3}, data="synthetic?train=96&val=16&test=16",
                      image_size=64, epochs=4, lr=1e-2, loss="label_smoothing_ce(smoothing=0.05) + 0.5*dice")
    ckpt = train(cfg, "runs/custom_loss", resume=False)
    print(f"val mIoU with a custom loss: {ckpt.metrics['val']['miou']:.3f}")
