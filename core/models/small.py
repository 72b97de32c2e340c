"""The small detectors of the lottery-ticket literature: MesoNet (Meso-4) and a 5-layer CNN.

Both end in a single logit (> 0 means *fake*) like every model here, and register
in the architecture registry, so ``--arch mesonet`` / ``--arch cnn5`` work for the
teacher method (dense training) and for ``lth``.
"""

from __future__ import annotations

from torch import nn

from core.models.registry import register_architecture


def _conv_block(in_channels: int, out_channels: int, kernel: int, pool: nn.Module) -> list[nn.Module]:
    """Meso-4's unit: conv -> ReLU -> BN -> pool (the published order: BN after the activation)."""
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_channels), pool]


class MesoNet(nn.Module):
    """Meso-4 (Afchar et al., 2018): four conv blocks (8, 8, 16, 16 filters; 3x3 then 5x5) and a 16-unit dense layer.

    The last pooling is adaptive to 8 x 8, which is exactly the published 4 x 4 max-pool at the
    published 256 px input and keeps the dense layer (and the parameter count, 27,977) the same
    at smaller inputs such as the embedded benchmark's 64 px.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(3, 8, 3, nn.MaxPool2d(2)),
            *_conv_block(8, 8, 5, nn.MaxPool2d(2)),
            *_conv_block(8, 16, 5, nn.MaxPool2d(2)),
            *_conv_block(16, 16, 5, nn.AdaptiveMaxPool2d(8)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 8 * 8, 16), nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(16, 1))

    def forward(self, images):
        return self.classifier(self.features(images))


class CNN5(nn.Module):
    """A 5-layer CNN: four 3x3 conv -> BN -> ReLU -> 2x2 max-pool stages (16, 32, 64, 128) and a linear head on the pooled map."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers, previous = [], 3
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, 1)

    def forward(self, images):
        return self.fc(self.avgpool(self.features(images)).flatten(1))


@register_architecture("mesonet")
def mesonet() -> nn.Module:
    return MesoNet()


@register_architecture("cnn5")
def cnn5() -> nn.Module:
    return CNN5()
