from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.rule import Invalid, Rule, Severity, Violation
from lint.flow.events import Forward, Freeze
from lint.frameworks.torch import TORCH_BN_TOKENS, TORCH_IMPORT


class FrozenBackboneBatchNormUpdates(Rule):
    """
    ## What it does
    Flags PyTorch parameters frozen (`p.requires_grad = False` over `parameters()`,
    `requires_grad_(False)`) on a module that contains BatchNorm (a torchvision
    resnet/densenet/mobilenet/efficientnet/regnet/inception/... model, a `torch.hub.load` of
    one, an `nn.Module` of the same file with `nn.BatchNorm*`/`nn.SyncBatchNorm`, an
    `nn.Sequential` holding BatchNorm) when that module then runs a training step in training
    mode: it is called in a loop or function that calls `.backward()` after `.train()` (or
    fresh from its constructor, which builds it in training mode), and nothing keeps its
    BatchNorm layers in eval mode: no `.eval()` on the frozen part or on its BatchNorm
    modules after `.train()`, no `FrozenBatchNorm2d`, no override of `train()` that puts them
    back in eval mode.

    A pretrained part that a model's `forward` runs under `torch.no_grad()` (`with
    torch.no_grad(): feats = self.cnn(x)`, `self.cnn` built with `weights=`/`pretrained=True`)
    is frozen in effect and counts the same way.

    Helpers of the same file are followed with the caller's values (`freeze(model)`,
    `train_one_epoch(model, ...)`, `model.train()` of a class that overrides `train()`).
    Across the project: a class of another module that freezes its own backbone (in
    `__init__`, directly or through one of its methods such as `fine_tune()`, or when that
    method is called here) or runs a pretrained part under `no_grad`, a module-level model
    frozen in another module, a training function of another module; the message names where
    the model is defined and frozen. A model whose training happens out of sight (a Lightning
    `Trainer`, a parameter nobody passes here) is not reported.

    ## Why is this bad?
    `requires_grad = False` stops the gradient, not the running-statistics update. In
    training mode every BatchNorm layer normalizes with the batch's mean and variance and
    overwrites its `running_mean`/`running_var` with them (momentum 0.1 per step), whether its
    weights are frozen or not. The "frozen" backbone drifts away from the statistics it was
    pretrained with, towards those of small, differently distributed fine-tuning batches;
    at `eval()` time it normalizes with statistics its frozen weights were never trained
    with, and accuracy drops, sometimes sharply with small batches.

    ## Example
    ```python
    model = torchvision.models.resnet50(weights="IMAGENET1K_V2")
    for p in model.parameters():
        p.requires_grad = False
    model.fc = nn.Linear(2048, 10)
    model.train()
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    model.train()
    for m in model.modules():  # keep the frozen BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for x, y in loader:
        ...
    ```

    Or put the frozen part in eval mode after every `model.train()` (`model.backbone.eval()`),
    override `train()` to do it, or build the backbone with
    `norm_layer=torchvision.ops.FrozenBatchNorm2d`. No automatic fix: where training mode is
    set again (each epoch, in a helper) is the author's structure to keep.

    ## References
    - PyTorch `BatchNorm2d` (running statistics in training mode): https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html
    - PyTorch autograd, "Locally disabling gradient computation" (`requires_grad` vs modes): https://pytorch.org/docs/stable/notes/autograd.html
    - torchvision `FrozenBatchNorm2d`: https://pytorch.org/vision/stable/generated/torchvision.ops.FrozenBatchNorm2d.html
    """

    code = "BN101"
    name = "torch-frozen-batchnorm-updates"
    severity = Severity.WARNING
    summary = "PyTorch: frozen backbone whose BatchNorm still updates its running statistics"
    project_wide = True
    framework = "torch"
    # "backward"/"train(": a file that only trains a model frozen in another module of the project
    prefilter = (("requires_grad", "backward", "train("), ("torch",), (TORCH_IMPORT,), TORCH_BN_TOKENS)

    VALID = [
        # the frozen BatchNorm layers are put back in eval mode after train()
        """
import torch
import torch.nn as nn
from torchvision import models
model = models.resnet18(weights="DEFAULT")
for p in model.parameters():
    p.requires_grad = False
model.fc = nn.Linear(512, 10)
model.train()
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.eval()
for x, y in loader:
    nn.functional.cross_entropy(model(x), y).backward()
""",
        # FrozenBatchNorm2d: no running statistics to update
        """
import torchvision
from torchvision.ops import FrozenBatchNorm2d
model = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
model.requires_grad_(False)
model.fc.requires_grad_(True)
for x, y in loader:
    criterion(model(x), y).backward()
""",
        # a frozen feature extractor used under no_grad in eval mode
        """
import torch
from torchvision.models import efficientnet_b0
backbone = efficientnet_b0(weights="DEFAULT").eval()
backbone.requires_grad_(False)
head = torch.nn.Linear(1280, 5)
for x, y in loader:
    with torch.no_grad():
        feats = backbone(x)
    criterion(head(feats), y).backward()
""",
        # VGG16 has no BatchNorm
        """
import torchvision
model = torchvision.models.vgg16(weights="DEFAULT")
for p in model.features.parameters():
    p.requires_grad = False
model.train()
for x, y in loader:
    criterion(model(x), y).backward()
""",
        # the model comes from another file: no guess
        """
import torch
from mylib import build_model
model = build_model()
for p in model.parameters():
    p.requires_grad = False
for x, y in loader:
    criterion(model(x), y).backward()
""",
        # cause 7: the freeze sits in a branch that cannot run
        """
import torch
import torchvision
FREEZE = False
model = torchvision.models.resnet18(weights="DEFAULT")
if FREEZE:
    for p in model.parameters():
        p.requires_grad = False
model.train()
for x, y in loader:
    criterion(model(x), y).backward()
""",
        # frozen only on the branch where the model is put in eval mode
        """
import torch
import torchvision
model = torchvision.models.resnet50(weights="DEFAULT")
if args.weights == "freeze":
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
for epoch in range(epochs):
    if args.weights == "finetune":
        model.train()
    elif args.weights == "freeze":
        model.eval()
    for x, y in loader:
        criterion(model(x), y).backward()
""",
        # a part computed under no_grad that is not pretrained (a target network, a fresh encoder): training it
        # from scratch by other means is a design, not a frozen pretrained backbone
        """
import torch
import torch.nn as nn
class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.teacher = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 2)
    def forward(self, x):
        with torch.no_grad():
            t = self.teacher(x)
        return self.head(t.mean((2, 3)))
net = Student()
for x, y in loader:
    nn.functional.cross_entropy(net(x), y).backward()
""",
        # the pretrained part under no_grad is put back in eval mode after every train()
        """
import torch
import torch.nn as nn
from torchvision import models
class Captioner(nn.Module):
    def __init__(self):
        super().__init__()
        cnn = models.resnet50(weights="DEFAULT")
        self.cnn = nn.Sequential(*list(cnn.children())[:-1])
        self.out = nn.Linear(2048, 10)
    def forward(self, x):
        with torch.no_grad():
            f = self.cnn(x)
        return self.out(f.flatten(1))
net = Captioner()
for x, y in loader:
    net.train()
    net.cnn.eval()
    nn.functional.cross_entropy(net(x), y).backward()
""",
    ]

    INVALID = [
        # a builder that returns the frozen model with its transforms, unpacked by the caller
        Invalid(
            """
import torch
import torchvision
def create_model(num_classes=3):
    weights = torchvision.models.EfficientNet_B2_Weights.DEFAULT
    model = torchvision.models.efficientnet_b2(weights=weights)
    for param in model.parameters():
        param.requires_grad = False
    model.classifier = torch.nn.Linear(1408, num_classes)
    return model, weights.transforms()
model, transforms = create_model()
model.train()
for x, y in loader:
    loss_fn(model(x), y).backward()
"""
        ),
        # cause 3: a model derived from a torchvision model's children keeps its BatchNorm
        Invalid(
            """
import torch.nn as nn
import torchvision
resnet = torchvision.models.resnet50(weights="DEFAULT")
backbone = nn.Sequential(*list(resnet.children())[:-1])
for p in backbone.parameters():
    p.requires_grad = False
head = nn.Linear(2048, 3)
for x, y in loader:
    loss_fn(head(backbone(x).flatten(1)), y).backward()
"""
        ),
        # cause 1: ``for phase in ["train", "val"]`` with the mode set per phase: the training phase trains the
        # frozen backbone in train() mode
        # the frozen front end runs under no_grad inside the training loop, in train() mode
        Invalid(
            """
import torch
import torchvision
model = torchvision.models.resnet50(weights="DEFAULT")
model.requires_grad_(False)
model.layer4.requires_grad_(True)
for epoch in range(epochs):
    model.train()
    for x, y in loader:
        with torch.no_grad():
            h = model.layer3(model.layer2(model.layer1(model.conv1(x))))
        loss = criterion(model.fc(model.layer4(h).mean((2, 3))), y)
        loss.backward()
"""
        ),
        Invalid(
            """
import torch
import torchvision
model = torchvision.models.resnet18(weights="DEFAULT")
for p in model.parameters():
    p.requires_grad = False
model.fc = torch.nn.Linear(512, 2)
for epoch in range(10):
    for phase in ["train", "val"]:
        if phase == "train":
            model.train()
        else:
            model.eval()
        for x, y in loaders[phase]:
            with torch.set_grad_enabled(phase == "train"):
                loss = criterion(model(x), y)
                if phase == "train":
                    loss.backward()
                    optimizer.step()
"""
        ),
        # cause 1: ``net.train() if is_train else net.eval()``: the training branch certainly runs
        Invalid(
            """
import torchvision
def run_epoch(net, loader, is_train):
    net.train() if is_train else net.eval()
    for x, y in loader:
        loss = criterion(net(x), y)
        if is_train:
            loss.backward()
backbone = torchvision.models.mobilenet_v2(weights="DEFAULT")
backbone.requires_grad_(False)
for epoch in range(epochs):
    run_epoch(backbone, train_loader, args.train)
"""
        ),
        Invalid(
            """
import torch
import torch.nn as nn
from torchvision import models
model = models.resnet50(weights="IMAGENET1K_V2")
for param in model.parameters():
    param.requires_grad = False
model.fc = nn.Linear(2048, 10)
model.train()
for x, y in loader:
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
"""
        ),
        # a backbone frozen inside its own module, trained without an explicit train()
        Invalid(
            """
import torch.nn as nn
import torchvision
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.mobilenet_v2(weights="DEFAULT").features
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(1280, 3)
    def forward(self, x):
        return self.head(self.backbone(x).mean((2, 3)))
net = Classifier()
for x, y in loader:
    loss_fn(net(x), y).backward()
"""
        ),
        # a module of this file with BatchNorm, frozen by a helper, trained by a helper
        Invalid(
            """
import torch
from torch import nn
encoder = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
def freeze(module):
    for p in module.parameters():
        p.requires_grad_(False)
def train_one_epoch(model, loader, opt):
    model.train()
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
freeze(encoder)
train_one_epoch(encoder, loader, opt)
"""
        ),
        # a pretrained part run under no_grad in forward: frozen in effect, its BatchNorm still updates in train()
        Invalid(
            """
import torch
import torch.nn as nn
from torchvision import models
class Captioner(nn.Module):
    def __init__(self):
        super().__init__()
        cnn = models.resnet50(weights="DEFAULT")
        self.cnn = nn.Sequential(*list(cnn.children())[:-1])
        self.out = nn.Linear(2048, 10)
    def forward(self, x):
        with torch.no_grad():
            f = self.cnn(x)
        return self.out(f.flatten(1))
net = Captioner()
optimizer = torch.optim.Adam(net.out.parameters())
for x, y in loader:
    nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()
"""
        ),
        # the class freezes its backbone through one of its own methods, called from __init__
        Invalid(
            """
import torch.nn as nn
import torchvision
class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torchvision.models.resnet34(weights="DEFAULT")
        self.set_finetuning(False)
    def set_finetuning(self, on):
        for p in self.body.parameters():
            p.requires_grad = False
        for block in list(self.body.children())[6:]:
            for p in block.parameters():
                p.requires_grad = on
    def forward(self, x):
        return self.body(x)
encoder = Encoder()
encoder.train()
for x, y in loader:
    loss_fn(encoder(x), y).backward()
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        tm = ctx.flow
        if tm.uses_frozen_bn:  # BatchNorm may be swapped for FrozenBatchNorm2d: prefer silence
            return
        freezes = tm.all_of(Freeze)
        if not freezes:
            return
        reported: set[int] = set()
        for forward in tm.all_of(Forward):
            # may-train is enough: the training branch of ``model.train() if is_train else model.eval()`` runs
            if forward.context != "training" or not forward.mode.may("train"):
                continue
            for freeze in freezes:
                if id(freeze.node) in reported:
                    continue
                if freeze.module.within(forward.module):
                    part = freeze.module
                elif forward.module.within(freeze.module):
                    part = forward.module
                else:
                    continue
                if part.contains_bn() is not True or not tm.mode_in(part, forward.state).may("train"):
                    continue
                if tm.bn_kept_in_eval(part, forward.state):
                    continue
                setter = tm.setter_event(tm.mode_in(part, forward.state).setter("train"))
                if setter is not None and tm.exclusive(freeze, setter):  # frozen only where eval() is chosen
                    continue
                reported.add(id(freeze.node))
                name = freeze.name or part.label
                frozen_at = f" at {freeze.elsewhere}" if freeze.elsewhere else ""
                trained = f"`{ctx.code(forward.node.func)}(...)`"
                if forward.reason:  # trained by a function of another module: the evidence, where it is
                    trained += f" (`{forward.reason}` calls .train() and .backward())"
                if freeze.how == "no_grad":
                    at = f" at {freeze.elsewhere}" if freeze.elsewhere else ""
                    state, why = f"is pretrained and runs under torch.no_grad(){at}", "no_grad"
                else:
                    state, why = f"is frozen{frozen_at}", "requires_grad"
                yield Violation(
                    freeze.node,
                    f"`{name}`{part.provenance()} {state}, but {trained} trains in training mode, so its BatchNorm layers "
                    f"keep overwriting running_mean/running_var ({why} stops gradients, not statistics): "
                    f"{_advice(tm.mode_in(part, forward.state).setter('train'))}",
                )


def _advice(setter) -> str:
    """After an explicit ``.train()``, say to undo it there; a module never put in train() is in training
    mode because PyTorch builds modules that way."""
    explicit = isinstance(setter, cst.Call) and isinstance(setter.func, cst.Attribute) and setter.func.attr.value == "train"
    if explicit:
        return "after every `.train()`, call `.eval()` on the frozen part or its BatchNorm modules, or use FrozenBatchNorm2d"
    return ("PyTorch builds modules in training mode, so call `.eval()` on the frozen part or its BatchNorm modules before "
            "training (and again after any `.train()`), or use FrozenBatchNorm2d")
