"""Inference with pretrained PyTorch models: torch.hub, a prediction helper, a test loop.

Run `bncheck examples/` to see the findings. This file is never executed by bncheck.
"""

import torch
import torch.nn as nn
import torchvision

# torch.hub.load returns the model in training mode, like every torchvision constructor.
classifier = torch.hub.load("pytorch/vision", "densenet121", weights="DEFAULT")

with torch.no_grad():
    # BN102: no classifier.eval() before this: BatchNorm normalizes each batch with its own
    # statistics (and updates the running ones), so the logits depend on the batch.
    logits = classifier(torch.rand(8, 3, 224, 224))


segmenter = torchvision.models.segmentation.deeplabv3_resnet50(weights="DEFAULT")
segmenter.eval()


def predict(image):
    # quiet: segmenter.eval() above holds on every path to here
    return segmenter(image.unsqueeze(0))["out"].argmax(1)


small = nn.Sequential(
    nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)
)


def test(model, loader):
    correct = 0
    for images, labels in loader:
        # BN102: test() is an evaluation, but the caller below has the model in training mode.
        correct += (model(images).argmax(1) == labels).sum().item()
    return correct


def train(model, loader, optimizer):
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()


opt = torch.optim.Adam(small.parameters())
for epoch in range(3):
    train(small, train_loader, opt)
    print(test(small, test_loader))

# BN103: this replaces the method with a bool; the mode does not change, and the next
# small.eval() raises TypeError. Call small.eval() instead.
small.train = False
