"""Small, seeded torch models and training loops for the PyTorch tests (and their pytester copies).

Each builder seeds torch, so a model and its training are the same on every run.  The data sit
far from the origin, so BatchNorm's initial running statistics (mean 0, variance 1) are far from
the data's and running statistics that have not converged show at once.
"""

from __future__ import annotations

import torch
from torch import nn

# These models are tiny: one thread is ~30x faster than two on this shared 2-core machine
# (thread hand-offs dominate), and results do not depend on it.
torch.set_num_threads(1)


def blobs(samples: int = 256, features: int = 16, classes: int = 3, offset: float = 5.0, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % classes
    centers = torch.randn(classes, features, generator=generator) * 3.0
    x = offset + centers[labels] + torch.randn(samples, features, generator=generator)
    return x, labels


def images(samples: int = 256, size: int = 16, seed: int = 0):
    """Stripes, horizontal (class 0) or vertical (class 1), in a bright range (no downloads)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(samples) % 2
    grid = torch.arange(size, dtype=torch.float32)
    phase = torch.rand(samples, 1, generator=generator) * 6.3
    freq = 0.8 + torch.rand(samples, 1, generator=generator) * 0.8
    wave = torch.sin(grid[None, :] * freq + phase)  # (samples, size)
    horizontal = wave[:, None, :].expand(samples, size, size)
    vertical = wave[:, :, None].expand(samples, size, size)
    x = torch.where(labels[:, None, None] == 0, horizontal, vertical)
    x = 4.0 + x + 0.3 * torch.randn(samples, size, size, generator=generator)
    return x[:, None].contiguous(), labels


def mlp(features: int = 16, classes: int = 3, momentum: float | None = 0.1, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(1)
    layers = [nn.Linear(features, 32, bias=False), nn.BatchNorm1d(32, momentum=momentum), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(32, 16, bias=False), nn.BatchNorm1d(16, momentum=momentum), nn.ReLU(), nn.Linear(16, classes)]
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 1, classes: int = 2, momentum: float | None = 0.1):
        super().__init__()
        torch.manual_seed(2)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, bias=False), nn.BatchNorm2d(8, momentum=momentum), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16, momentum=momentum), nn.ReLU(),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def train(model: nn.Module, x, y, *, epochs: int, batch_size: int = 32, lr: float = 0.01):
    """A plain training loop; returns the last epoch's sample-weighted loss and accuracy."""
    torch.manual_seed(3)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        loss_sum = correct = seen = 0.0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            output = model(xb)
            loss = loss_fn(output, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(xb)
            correct += (output.argmax(1) == yb).sum().item()
            seen += len(xb)
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


def undertrained_mlp(momentum: float | None = 0.01, epochs: int = 3, dropout: float = 0.0):
    """The classic failure in miniature: accuracy near 1.0 in a few steps, while momentum 0.01
    leaves most of the initial mean 0 / variance 1 in the running statistics."""
    x, y = blobs()
    model = mlp(momentum=momentum, dropout=dropout)
    fit = train(model, x, y, epochs=epochs)
    return model, x, y, fit


def well_trained_mlp(epochs: int = 20):
    """Enough batches (20 epochs x 8) at momentum 0.1 for the running statistics to converge."""
    x, y = blobs()
    model = mlp(momentum=0.1)
    fit = train(model, x, y, epochs=epochs)
    return model, x, y, fit


# -- a torchvision-style ResNet (torchvision.models.resnet18(weights=None), built here) --------
# torchvision from PyPI needs a torch build that is several GB; the test suite builds the same
# architecture (BasicBlock, stages [2, 2, 2, 2], zero-free default init) from torch.nn itself.


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet: conv1 7x7/2, bn1, relu, maxpool, layer1..4, avgpool, fc."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 1000, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(width, layers[0], 1)
        self.layer2 = self._stage(width * 2, layers[1], 2)
        self.layer3 = self._stage(width * 4, layers[2], 2)
        self.layer4 = self._stage(width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        stage += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    torch.manual_seed(4)
    return ResNet((2, 2, 2, 2), num_classes, in_channels)
