from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.rule import Fix, Invalid, Rule, Severity, Violation, assignment
from lint.flow.events import AttributeFreeze, ModeOverwrite
from lint.frameworks.torch import TORCH_IMPORT


class FreezeDoesNothing(Rule):
    """
    ## What it does
    Flags PyTorch freezing that does nothing:

    - `module.requires_grad = False` on a value known to be an `nn.Module` (a torchvision
      model or one of its sub-modules, an `nn.*` layer, an instance of an `nn.Module`
      subclass, `self` inside one, a loop variable over `model.modules()`/`children()`, a
      parameter annotated `nn.Module`);
    - assignments that overwrite the mode methods: `model.train = True`, `model.eval = False`.

    Tensors and parameters are not reported: `tensor.requires_grad = False` and
    `p.requires_grad = False` over `model.parameters()` are how freezing is done. Where the
    value's type is decided in another file, the rule stays silent.

    ## Why is this bad?
    `requires_grad` is an attribute of tensors. On an `nn.Module` the assignment just creates
    a plain Python attribute named `requires_grad`: no parameter is frozen, the optimizer
    keeps updating all of them, and nothing raises. The method is `requires_grad_()`, with the
    trailing underscore. `model.train = True` replaces the bound method `train` with a boolean:
    the mode does not change (the module stays in whatever mode it was, BatchNorm and Dropout
    included), and every later `model.train()` raises `TypeError: 'bool' object is not
    callable`, including the one inside `model.eval()`.

    ## Example
    ```python
    backbone = torchvision.models.resnet50(weights="DEFAULT")
    backbone.requires_grad = False
    model.train = True
    ```

    ## Use instead
    ```python
    backbone = torchvision.models.resnet50(weights="DEFAULT")
    backbone.requires_grad_(False)
    model.train()
    ```

    `--fix` replaces `module.requires_grad = False` with `module.requires_grad_(False)` where
    the value is known to be an `nn.Module` (never on a tensor or parameter). Overwritten mode
    methods are left for you to change: whether `model.train()` or `model.eval()` was meant is
    not for the linter to guess.

    ## References
    - `nn.Module.requires_grad_`: https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.requires_grad_
    - `nn.Module.train` / `eval`: https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.train
    - PyTorch autograd, "Setting requires_grad": https://pytorch.org/docs/stable/notes/autograd.html
    """

    code = "BN103"
    name = "torch-freeze-does-nothing"
    severity = Severity.ERROR
    summary = "PyTorch: `module.requires_grad = False` or `model.train = True` freezes nothing"
    # The assignments the analysis reads: ``X.requires_grad = False``, ``X.train``/``X.eval`` = a bool.
    project_wide = True
    framework = "torch"
    prefilter = (
        ("torch",),
        (TORCH_IMPORT,),
        (assignment("requires_grad", "False"), assignment("train|eval", "True", "False")),
    )
    fixable = True

    VALID = [
        # parameters and tensors do have requires_grad
        """
import torch
from torchvision import models
model = models.resnet18()
for p in model.parameters():
    p.requires_grad = False
x = torch.randn(3, 3)
x.requires_grad = False
model.fc.weight.requires_grad = False
""",
        # the method, with its underscore
        """
import torch.nn as nn
encoder = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
encoder.requires_grad_(False)
encoder.train()
""",
        # a plain object's flag named train is not a module's method
        """
import torch
class Config:
    def __init__(self):
        self.train = True
cfg = Config()
cfg.train = False
""",
        # a value from another file: type unknown here
        """
import torch
from mylib import load_backbone
backbone = load_backbone()
backbone.requires_grad = False
""",
    ]

    INVALID = [
        Invalid(
            """
import torchvision
backbone = torchvision.models.resnet50(weights="DEFAULT")
backbone.requires_grad = False  # freeze the backbone
""",
            fixed="""
import torchvision
backbone = torchvision.models.resnet50(weights="DEFAULT")
backbone.requires_grad_(False)  # freeze the backbone
""",
        ),
        # every sub-module of a model
        Invalid(
            """
import torch.nn as nn
from torchvision.models import densenet121
model = densenet121()
for m in model.features.modules():
    m.requires_grad = False
""",
            fixed="""
import torch.nn as nn
from torchvision.models import densenet121
model = densenet121()
for m in model.features.modules():
    m.requires_grad_(False)
""",
        ),
        # self inside an nn.Module, and a sub-module attribute
        Invalid(
            """
from torch import nn
class Student(nn.Module):
    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        self.encoder.requires_grad = False
""",
            fixed="""
from torch import nn
class Student(nn.Module):
    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        self.encoder.requires_grad_(False)
""",
        ),
        # the mode method overwritten
        Invalid(
            """
import torch
import torchvision
model = torchvision.models.mobilenet_v3_small()
model.train = True
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        tm = ctx.flow
        for event in tm.of(AttributeFreeze):
            assign: cst.Assign = event.node
            target = event.target
            name = ctx.code(target.value)
            call = cst.Call(
                func=cst.Attribute(value=target.value, attr=cst.Name("requires_grad_")),
                args=[cst.Arg(value=cst.Name("False"))],
            )
            fix = Fix().replace(assign, cst.Expr(value=call, semicolon=assign.semicolon))
            yield Violation(
                assign,
                f"`{name}` is an nn.Module: `{name}.requires_grad = False` only sets a plain attribute and freezes "
                f"no parameter; call `{name}.requires_grad_(False)`",
                fix,
            )
        for event in tm.of(ModeOverwrite):
            assign = event.node
            owner = ctx.code(assign.targets[0].target.value) if isinstance(assign, cst.Assign) else event.module.label
            attr = event.attr
            value = ctx.code(assign.value)
            meant = "train()" if (attr == "train") == (value == "True") else "eval()"
            yield Violation(
                assign,
                f"`{owner}.{attr} = {value}` replaces the nn.Module method `{attr}` with a bool: the mode does not "
                f"change and every later `{owner}.train()`/`.eval()` raises TypeError; call `{owner}.{meant}`",
            )
