"""The same fine-tuning with the frozen BatchNorm kept frozen: bncheck reports nothing here.

Run `bncheck examples/` to see the findings. This file is never executed by bncheck.
"""

import torch
import torch.nn as nn
from torchvision import models
from torchvision.ops import misc


def set_bn_eval(module):
    if isinstance(module, nn.BatchNorm2d):
        module.eval()


model = models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V2)
model.requires_grad_(False)  # the method, with its underscore
model.fc = nn.Linear(model.fc.in_features, 5)
optimizer = torch.optim.SGD(model.fc.parameters(), lr=1e-3, momentum=0.9)

for epoch in range(10):
    model.train()
    model.apply(set_bn_eval)  # frozen BatchNorm keeps its ImageNet statistics
    for images, labels in train_loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)


class Detector(nn.Module):
    """A backbone frozen by overriding train(): every model.train() keeps its BatchNorm in eval mode."""

    def __init__(self):
        super().__init__()
        self.backbone = models.resnet18(weights="DEFAULT")
        for p in self.backbone.parameters():
            p.requires_grad = False
        self.head = nn.Linear(1000, 4)

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x):
        return self.head(self.backbone(x))


detector = Detector()
detector.train()
for images, boxes in train_loader:
    nn.functional.l1_loss(detector(images), boxes).backward()

# Tensors do have requires_grad: this is how a single tensor is frozen.
anchors = torch.rand(9, 4)
anchors.requires_grad = False
frozen_norm = misc.FrozenBatchNorm2d  # mentioned so the reader knows the third way
