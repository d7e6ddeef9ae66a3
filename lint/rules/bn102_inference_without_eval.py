from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.nodes import walk
from lint.rule import Invalid, Rule, Severity, Violation
from lint.flow.events import EvalCarriedOver, Forward
from lint.frameworks.torch import TORCH_BN_TOKENS, TORCH_IMPORT


class InferenceWithoutEval(Rule):
    """
    ## What it does
    Flags a PyTorch module with BatchNorm that is called for inference while in training
    mode:

    - called under `torch.no_grad()` / `torch.inference_mode()` /
      `torch.set_grad_enabled(False)`, in a function decorated with one of them, or in a
      function named like predict/evaluate/eval/test/infer/validate, or in a loop over an
      evaluation loader (`for x, y in test_loader:`, `val_dl`, `valid_dataloader`) that never
      calls `.backward()`, with no `.eval()` on it before the call on that path. PyTorch builds every module in training mode, so this
      includes a model fresh from a torchvision constructor, `torch.hub.load` or
      `timm.create_model` that is never put in eval mode;
    - an `.eval()` inside an epoch loop (for validation) with no `.train()` back before the
      next epoch's training step, so every epoch after the first trains in eval mode.

    Paths are followed through helpers of the same file: `evaluate(model, loader)` after
    `train_one_epoch(model, ...)` is reported at the forward call inside `evaluate` when
    neither helper nor the caller calls `model.eval()`. Where the two branches of an `if`
    disagree, or the model comes from another file (`torch.load`, a parameter nobody passes
    here), the rule stays silent. `test_*` functions of pytest files are not inference.

    ## Why is this bad?
    `torch.no_grad()` only turns off gradient tracking; it does not change the mode. In
    training mode every BatchNorm layer normalizes with the statistics of the batch at hand
    and updates its running statistics with them: predictions depend on what else is in the
    batch (a batch of one is normalized by itself), evaluation metrics are wrong, and
    evaluating on test data silently moves the running statistics towards the test set. The
    opposite mistake, leaving the model in eval mode after validation, trains every later
    epoch with BatchNorm frozen on its running statistics (and Dropout off).

    ## Example
    ```python
    model = torchvision.models.resnet50(weights="DEFAULT")
    with torch.no_grad():
        logits = model(images)

    for epoch in range(epochs):
        for x, y in train_loader:
            loss_fn(model(x), y).backward()
        model.eval()
        validate(model)
    ```

    ## Use instead
    ```python
    model = torchvision.models.resnet50(weights="DEFAULT")
    model.eval()
    with torch.no_grad():
        logits = model(images)

    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            loss_fn(model(x), y).backward()
        model.eval()
        validate(model)
    ```

    No automatic fix: where the mode belongs (before the loop, in the helper, at the call
    site) depends on the code's structure.

    ## References
    - `nn.Module.eval`: https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.eval
    - PyTorch autograd, "Evaluation mode (nn.Module.eval())" vs `no_grad`: https://pytorch.org/docs/stable/notes/autograd.html#locally-disabling-gradient-computation
    - `torch.hub.load` (models returned in training mode): https://pytorch.org/docs/stable/hub.html
    """

    code = "BN102"
    name = "torch-inference-without-eval"
    severity = Severity.WARNING
    summary = "PyTorch: model with BatchNorm used for inference in training mode"
    project_wide = True
    framework = "torch"
    skips_tests = True
    prefilter = (
        ("torch",),
        (TORCH_IMPORT,),
        ("no_grad", "inference_mode", "set_grad_enabled", "eval", "predict", "infer", "test", "valid"),
        TORCH_BN_TOKENS,
    )

    VALID = [
        # eval() before no_grad
        """
import torch
import torchvision
model = torchvision.models.resnet50(weights="DEFAULT")
model.eval()
with torch.no_grad():
    out = model(batch)
""",
        # a model without BatchNorm (and without Dropout) behaves the same in both modes
        """
import torch
import torch.nn as nn
net = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1))
with torch.no_grad():
    out = net(x)
""",
        # loaded from a file: its mode was pickled with it
        """
import torch
model = torch.load("model.pt")
with torch.no_grad():
    out = model(x)
""",
        # the epoch loop puts the model back in training mode at its start
        """
import torch
from torchvision.models import resnet18
model = resnet18()
for epoch in range(5):
    model.train()
    for x, y in train_loader:
        loss_fn(model(x), y).backward()
    model.eval()
    with torch.no_grad():
        val = model(x_val)
""",
        # an evaluate() helper nobody calls in this file: its caller may call eval()
        """
import torch
def evaluate(model, loader):
    with torch.no_grad():
        return [model(x) for x, _ in loader]
""",
        # cause 5: a forward on a random tensor only to look at the output's shape
        """
import torch
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
    def forward(self, x):
        return self.bn(self.conv(x))
def test():
    net = Net()
    y = net(torch.randn(2, 3, 32, 32))
    print(y.size())
test()
""",
        # cause 7: code that cannot run
        """
import torch
import torchvision
model = torchvision.models.resnet18()
if False:
    with torch.no_grad():
        model(images)
""",
        # cause 1: the validation phase of ``for phase in ("train", "val")`` puts the model in eval mode
        """
import torch
import torchvision
model = torchvision.models.resnet50(weights="DEFAULT")
for epoch in range(5):
    for phase in ("train", "val"):
        if phase == "train":
            model.train()
        else:
            model.eval()
        for x, y in loaders[phase]:
            with torch.set_grad_enabled(phase == "train"):
                loss = criterion(model(x), y)
                if phase == "train":
                    loss.backward()
""",
        # cause 9: eval() for validation, train() again a few lines later
        """
import torch
from torchvision.models import resnet18
model = resnet18()
for epoch in range(3):
    for x, y in train_loader:
        loss_fn(model(x), y).backward()
    model.eval()
    with torch.no_grad():
        score = sum(model(x).argmax(1).eq(y).sum() for x, y in val_loader)
    model.train()
""",
        # cause 9: train() at the top of the inner batch loop undoes the eval() of the evaluation at the end
        # of each epoch, whose own forwards run in eval mode as meant
        """
import torch
import torch.nn as nn
generator = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 4))
for epoch in range(epochs):
    for i, (imgs, _) in enumerate(dataloader):
        generator.train()
        loss = loss_fn(generator(noise), imgs)
        loss.backward()
        optimizer.step()
    generator.eval()
    samples = generator(fixed_noise)
""",
        # no_grad inside a training step: features for the step, not inference (BN101's concern)
        """
import torch
import torchvision
model = torchvision.models.resnet50(weights="DEFAULT")
model.train()
for x, y in loader:
    with torch.no_grad():
        h = model.layer3(model.layer2(model.layer1(x)))
    loss = criterion(model.fc(model.layer4(h).mean((2, 3))), y)
    loss.backward()
""",
        # the evaluation helper itself puts the model in train() mode when asked to: a deliberate comparison
        """
import torch
import torch.nn as nn
net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
def test(model, train=False):
    if train:
        model.train()
    else:
        model.eval()
    with torch.no_grad():
        return model(x_test)
test(net, train=True)
""",
        # the evaluation loop over the test loader runs after eval(), and train() is restored for the next epoch
        """
import torch
import torchvision
model = torchvision.models.resnet18(num_classes=10)
for epoch in range(5):
    model.train()
    for x, y in train_loader:
        loss_fn(model(x), y).backward()
    model.eval()
    for x, y in test_loader:
        correct = (model(x).argmax(1) == y).sum()
""",
    ]

    INVALID = [
        # cause 4: the constructor through a local alias
        Invalid(
            """
import torch
import torchvision
Base = torchvision.models.resnet50
model = Base(weights="DEFAULT")
with torch.no_grad():
    out = model(images)
"""
        ),
        # cause 1: the validation phase never calls eval(): it runs in the training phase's train() mode
        Invalid(
            """
import torch
import torchvision
model = torchvision.models.resnet50(weights="DEFAULT")
for phase in ["train", "val"]:
    if phase == "train":
        model.train()
    for x, y in loaders[phase]:
        with torch.set_grad_enabled(phase == "train"):
            loss = criterion(model(x), y)
            if phase == "train":
                loss.backward()
"""
        ),
        Invalid(
            """
import torch
import torchvision.models as models
model = models.densenet121(weights="DEFAULT")
with torch.no_grad():
    probs = model(images).softmax(1)
"""
        ),
        # torch.hub models come back in training mode
        Invalid(
            """
import torch
model = torch.hub.load("pytorch/vision", "resnet18", weights="IMAGENET1K_V1")
@torch.inference_mode()
def embed(batch):
    return model(batch)
embed(images)
"""
        ),
        # evaluate() after a training epoch, and eval() left for the next epoch
        Invalid(
            """
import torch
import torch.nn as nn
net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(2))
def evaluate(model, loader):
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).sum() for x, y in loader)
net.train()
for x, y in train_loader:
    loss_fn(net(x), y).backward()
evaluate(net, val_loader)
"""
        ),
        Invalid(
            """
import torch
from torchvision.models import mobilenet_v2
model = mobilenet_v2(num_classes=10)
model.train()
for epoch in range(20):
    for x, y in train_loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_val).argmax(1) == y_val).float().mean()
"""
        ),
        # an evaluation loop over the test loader with no eval() (and no no_grad): the model is still in train mode
        Invalid(
            """
import torch
import torchvision
model = torchvision.models.resnet18(num_classes=10)
for epoch in range(5):
    for x, y in train_loader:
        loss_fn(model(x), y).backward()
    for x, y in test_loader:
        correct = (model(x).argmax(1) == y).sum()
"""
        ),
        # accuracy under no_grad beside the inner training loop: the epoch loop is not a step, this is evaluation;
        # the class is redefined (as later notebook cells do) and the second definition has the BatchNorm
        Invalid(
            """
import torch
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    def forward(self, x):
        return self.body(x)
def accuracy(model, loader):
    return sum((model(x).argmax(1) == y).sum() for x, y in loader)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    def forward(self, x):
        return self.body(x)
model = Net()
for epoch in range(3):
    model.train()
    for x, y in train_loader:
        loss_fn(model(x), y).backward()
    with torch.set_grad_enabled(False):
        print(accuracy(model, train_loader))
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        tm = ctx.flow
        reported: set[int] = set()
        tests = ctx.is_test_file  # unit tests run BatchNorm in training mode on purpose
        for event in tm.all_of(Forward):
            if event.context != "inference" or not event.mode.must("train") or id(event.node) in reported:
                continue
            if event.data == "random" or tests:  # ``net(torch.randn(2, 3, 32, 32))``: a shape check, not inference
                continue
            if _set_by_the_function_itself(event):  # ``def test(model, train): model.train() if train ...``: on purpose
                continue
            if event.module.contains_bn() is not True:
                continue
            reported.add(id(event.node))
            name = ctx.code(event.node.func)
            where = _where(event.reason)
            since = _since(ctx, event)
            via = f" (reached through `{ctx.code(event.via)}`)" if event.via is not None else ""
            note = " (no_grad does not change the mode)" if "grad" in event.reason or "inference" in event.reason else ""
            yield Violation(
                event.node,
                f"`{name}`{event.module.provenance()} is called {where}{via} in training mode ({since}): its BatchNorm layers normalize "
                f"with the batch's own statistics and overwrite their running statistics{note}; call "
                f"`{_root(name)}.eval()` before it",
            )
        for event in tm.of(EvalCarriedOver):
            call = event.eval_call
            name = ctx.code(call.func.value) if call is not None and hasattr(call, "func") else event.module.label
            how = f"`{name}.eval()`" if call is event.node else f"`{ctx.code(event.node)}` (it calls `{name}.eval()`)"
            yield Violation(
                event.node,
                f"{how} in the training loop is never undone: from the next iteration on, training runs in eval "
                f"mode (BatchNorm frozen on its running statistics, Dropout off); call `.train()` on the model at "
                f"the start of each epoch",
            )


def _set_by_the_function_itself(event: Forward) -> bool:
    """The function that runs the inference put the model in train() mode itself: deliberate."""
    setter, function = event.mode_node("train"), event.function
    explicit = isinstance(setter, cst.Call) and isinstance(setter.func, cst.Attribute) and setter.func.attr.value == "train"
    if not explicit or function is None:
        return False
    return any(n is setter for n in walk(function.body))


def _where(reason: str) -> str:
    if reason.startswith("@"):
        return f"in a function decorated `{reason}`"
    if reason.startswith("torch."):
        return f"under `{reason}`"
    if reason.startswith("an evaluation loop"):
        return f"in {reason}"
    return f"in `{reason}`"


def _since(ctx: FileContext, event: Forward) -> str:
    node = event.mode_node("train")
    if node is None:
        return "PyTorch builds modules in training mode"
    code = ctx.code(node)
    if len(code) > 60:
        code = code[:57] + "..."
    if code.endswith(".train()") or ".train(" in code:
        return f"set by `{code}`"
    return f"`{code}` builds it in training mode"


def _root(name: str) -> str:
    return name[: -len(".forward")] if name.endswith(".forward") else name
