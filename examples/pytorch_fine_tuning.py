"""Fine-tuning a torchvision ResNet on a small data set, the way many tutorials and notebooks do it.

Run `bncheck examples/` to see the findings. This file is never executed by bncheck.
"""

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

device = "cuda" if torch.cuda.is_available() else "cpu"
tf = transforms.Compose([transforms.Resize(224), transforms.ToTensor()])
train_loader = DataLoader(datasets.ImageFolder("data/train", tf), batch_size=32, shuffle=True, drop_last=True)
val_loader = DataLoader(datasets.ImageFolder("data/val", tf), batch_size=64)

model = models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V2)
for param in model.parameters():
    # BN101: this freezes the weights, but model.train() below lets every BatchNorm layer of the
    # backbone overwrite its ImageNet running statistics with those of these small batches.
    param.requires_grad = False
model.fc = nn.Linear(model.fc.in_features, 5)
model = model.to(device)

criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.fc.parameters(), lr=1e-3, momentum=0.9)


def validate(net, loader):
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            preds = net(images.to(device)).argmax(1)
            correct += (preds == labels.to(device)).sum().item()
            total += labels.numel()
    return correct / total


model.train()
for epoch in range(10):
    for images, labels in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(images.to(device)), labels.to(device))
        loss.backward()
        optimizer.step()
    # BN102: validate() puts the model in eval mode and nothing puts it back: from the second
    # epoch on, training runs with BatchNorm (and Dropout) in eval mode.
    print(epoch, validate(model, val_loader))


class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = models.mobilenet_v3_small(weights="DEFAULT").features
        # BN103: an nn.Module has no requires_grad to set; this freezes nothing (the method is
        # requires_grad_). `bncheck --fix` rewrites it to self.encoder.requires_grad_(False).
        self.encoder.requires_grad = False
        self.proj = nn.Linear(576, 128)

    def forward(self, a, b):
        return self.proj(self.encoder(a).mean((2, 3))), self.proj(self.encoder(b).mean((2, 3)))
