"""The DCGAN generator of the PyTorch DCGAN tutorial, as shipped (trained on DigiFace-1M) in the wheel
``gan-face-generate==1.1.1``: z [N, nz] -> 64x64 image in [-1, 1].

Five transposed convolutions (4x4; the first stride 1 without padding, then stride 2 with padding 1), each but
the last followed by batch norm (running statistics: eval mode, so a sample never depends on its batch) and
ReLU; Tanh at the end. Parameter names (``main.0.weight``, ``main.1.running_mean``, ...) follow the
``nn.Sequential`` positions of the wheel's ``netG_state_dict``, which therefore loads unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["DCGANConfig", "DCGANGenerator"]


@dataclass(frozen=True)
class DCGANConfig:
    z_dim: int = 100
    features: int = 64
    img_channels: int = 3

    @property
    def resolution(self) -> int:
        return 64


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: DCGANConfig = DCGANConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.resolution = cfg.z_dim, cfg.resolution
        f = cfg.features
        widths = [cfg.z_dim, 8 * f, 4 * f, 2 * f, f]
        layers: list[nn.Module] = []
        for i in range(4):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride, pad, bias=False),
                       nn.BatchNorm2d(widths[i + 1]), nn.ReLU()]
        layers += [nn.ConvTranspose2d(f, cfg.img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.eval()

    @classmethod
    def infer_config(cls, state: dict[str, Tensor]) -> DCGANConfig:
        """Read nz, ngf and nc off the first and last weight shapes of a ``netG_state_dict``."""
        first, last = state["main.0.weight"], state["main.12.weight"]
        return DCGANConfig(z_dim=first.shape[0], features=last.shape[0], img_channels=last.shape[1])

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z.float().reshape(z.shape[0], -1, 1, 1))
