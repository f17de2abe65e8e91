"""Gated-SCNN (Takikawa et al., ICCV 2019): a shape stream gated by the regular stream.

* Regular stream: any encoder (output stride 8/16); its stride-8, -16 and deepest features gate the
  shape stream.
* Shape stream: starts from the stride-4 features; three residual blocks, each followed by a Gated
  Convolutional Layer (GCL): ``alpha = sigmoid(conv1x1(s || r))``, ``s = conv1x1(s * (1 + alpha))``,
  where ``r`` is a 1-channel projection of a regular-stream feature. A 1×1 conv gives the edge logits.
* Image gradients: the paper concatenates OpenCV Canny edges computed outside the network. Canny's
  hysteresis has no op in TFLite or Core ML, so here a fixed (non-trainable) Sobel convolution of the
  grey image computes the gradient magnitude inside the graph; it is fused with the shape stream's
  edge map by a 1×1 conv + sigmoid, exactly where the paper fuses Canny.
* Fusion: the fused edge map is resized to the ASPP resolution, projected by a 1×1 conv and
  concatenated with the ASPP branches; a DeepLabV3+-style decoder (stride-4 skip) follows.
* Mobile adaptation: the shape stream runs at stride 4 (the paper runs it at full resolution); edge
  logits are upsampled to the input size for the loss.
* Training signal: ``loss_terms`` names the loss-spec terms the trainer adds to ``--loss`` unless it
  already names one of them: class-balanced edge BCE, the edge-attention cross-entropy and the
  dual-task boundary-consistency regularizer (:mod:`edgeseg.losses.dual_task`).

In training mode ``forward`` returns ``{"out": logits, "edge": edge_logits}``; in eval mode (and in
every export) it returns the logits tensor only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeseg.models import MODELS
from edgeseg.models.encoders import make_encoder, require_output_stride
from edgeseg.models.layers import ASPP, ConvBNReLU, crop_like, pad_input, resize, scaled_rates


class GatedConv(nn.Module):
    """GCL: gate shape features ``s`` with a 1-channel regular-stream map ``r``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.BatchNorm2d(cin + 1), nn.Conv2d(cin + 1, cin + 1, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(cin + 1, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        alpha = self.gate(torch.cat([s, r], dim=1))
        return self.conv(s * (alpha + 1))


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNReLU(c, c, 3), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Sobel(nn.Module):
    """Gradient magnitude of the grey image with fixed Sobel kernels (export-safe stand-in for Canny)."""

    def __init__(self) -> None:
        super().__init__()
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        self.register_buffer("kernel", torch.stack([gx, gx.t()]).unsqueeze(1))  # 2x1x3x3
        self.register_buffer("grey", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = (x * self.grey).sum(dim=1, keepdim=True)
        d = F.conv2d(g, self.kernel, padding=1)
        return torch.sqrt((d * d).sum(dim=1, keepdim=True) + 1e-6)


class GSCNN(nn.Module):
    #: loss-spec terms the trainer adds to ``--loss`` (weights are set there, e.g. ``ce + 2*edge_bce``)
    loss_terms = "edge_bce + edge_attention + dual_task"
    #: extra outputs of ``forward`` in training mode, read by those terms
    train_outputs = ("edge",)

    def __init__(self, num_classes: int, encoder: str, output_stride: int, channels: int,
                 encoder_weights: str | None) -> None:
        super().__init__()
        self.encoder = make_encoder(encoder, output_stride, encoder_weights)
        self.size_divisor = 32
        ch = self.encoder.channels
        self.i4, self.gates_from = self.encoder.level(4), [self.encoder.level(8), self.encoder.level(16), len(ch) - 1]
        widths = [32, 16, 8]
        self.shape_in = nn.Conv2d(ch[self.i4], widths[0], 1)
        self.res = nn.ModuleList([_Res(w) for w in widths])
        self.dsn = nn.ModuleList([nn.Conv2d(ch[i], 1, 1) for i in self.gates_from])
        self.gcl = nn.ModuleList([GatedConv(w, w2) for w, w2 in zip(widths, widths[1:] + [widths[-1]])])
        self.edge_out = nn.Conv2d(widths[-1], 1, 1)
        self.sobel = Sobel()
        self.fuse = nn.Conv2d(2, 1, 1)
        self.edge_branch = ConvBNReLU(1, channels, 1)
        self.aspp = ASPP(ch[-1], channels, scaled_rates((6, 12, 18), output_stride), extra=channels)
        self.low_level = ConvBNReLU(ch[self.i4], 48, 1)
        self.decoder = nn.Sequential(ConvBNReLU(channels + 48, channels, 3), ConvBNReLU(channels, channels, 3))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor):
        image, x = x, pad_input(x, self.size_divisor)
        feats = self.encoder(x)
        low = feats[self.i4]
        s = self.shape_in(low)
        for res, dsn, gcl, i in zip(self.res, self.dsn, self.gcl, self.gates_from):
            s = gcl(res(s), resize(dsn(feats[i]), s.shape[-2:]))
        edge_logits = self.edge_out(s)
        grad = F.adaptive_avg_pool2d(self.sobel(x), s.shape[-2:]) if x.shape[-1] != s.shape[-1] else self.sobel(x)
        acts = torch.sigmoid(self.fuse(torch.cat([torch.sigmoid(edge_logits), grad], dim=1)))
        y = self.aspp(feats[-1], self.edge_branch(resize(acts, feats[-1].shape[-2:])))
        y = torch.cat([resize(y, low.shape[-2:]), self.low_level(low)], dim=1)
        out = crop_like(resize(self.classifier(self.decoder(y)), x.shape[-2:]), image)
        if self.training:
            return {"out": out, "edge": crop_like(resize(edge_logits, x.shape[-2:]), image)}
        return out


@MODELS.register("gscnn")
def gscnn(num_classes: int, encoder: str = "resnet18", output_stride: int = 16, channels: int = 128,
          encoder_weights: str | None = None) -> nn.Module:
    """Gated-SCNN: shape stream with gated conv layers + Sobel gradients, ASPP fusion, dual-task loss."""
    require_output_stride("gscnn", output_stride, (8, 16), "its ASPP fusion is atrous")
    return GSCNN(num_classes, encoder, output_stride, channels, encoder_weights)
