from __future__ import annotations

from typing import Iterator

import libcst as cst

from lint.context import FileContext
from lint.flow.events import KerasFit
from lint.frameworks.keras import BN_MODEL_TOKENS
from lint.names import dotted
from lint.nodes import walk
from lint.rule import Invalid, Rule, Severity, Violation
from lint.frameworks.torch import (
    TORCH_BN_CLASS,
    TORCHVISION_BN,
    TORCHVISION_BN_TOKENS,
    is_torch_bn_class,
    is_torchvision_bn_model,
)

_TENSOR_MAKERS = frozenset({"randn", "rand", "zeros", "ones", "empty", "full", "normal", "uniform", "random"})

_KERAS_EFFECT = (
    "a Dense layer's BatchNormalization sees a batch variance of exactly 0 (its output collapses to beta) and "
    "drags its moving variance towards 0, a convolutional one normalizes each image by its own spatial "
    "statistics, so predict() disagrees with training"
)
_TORCH_EFFECT = (
    "BatchNorm1d raises \"Expected more than 1 value per channel when training\", BatchNorm2d normalizes the "
    "image by its own spatial statistics, noisy and biased, and both pull the running statistics off"
)


class BatchesOfOne(Rule):
    """
    ## What it does
    Flags BatchNormalization trained on batches of one sample:

    - Keras: `model.fit(..., batch_size=1)` (also through a `**fit_kwargs` dict or a
      constant, or a `tf.data` dataset `.batch(1)` passed to `fit`) on a model with
      BatchNormalization (built in this file or in another module of the project);
    - PyTorch: a training `DataLoader` with `batch_size=1`, or with no `batch_size` at all
      (PyTorch's default is 1), in a file whose model has BatchNorm (`nn.BatchNorm1d/2d/3d`,
      `SyncBatchNorm`, or a torchvision resnet/densenet/mobilenet/efficientnet/regnet/
      inception/... model);
    - PyTorch: a training `DataLoader` without `drop_last=True` whose dataset size `N` and
      batch size `B` are visible in the file (literals, constants, `TensorDataset` of
      `torch.randn(N, ...)`, `range(N)`, `random_split(ds, [a, b])`, slices) with
      `N % B == 1`, so the last batch of every epoch holds one sample.

    A `DataLoader` counts as a training loader when it shuffles (`shuffle=True`), when its
    name or dataset mentions "train", or when a loop over it calls `.backward()` or
    `.step()`; evaluation loaders with batches of one are harmless (BatchNorm is in eval mode
    there) and are not reported. Where the model's BatchNorm or the sizes live in another
    file, the rule stays silent.

    Severity: warning.

    No automatic fix: the right batch size depends on memory and data.

    ## Why is this bad?
    BatchNormalization normalizes with the statistics of the batch. With one sample there
    are none worth the name: a Dense layer's BatchNormalization sees a batch variance of
    exactly 0, so its training output collapses to its offset and its moving variance is
    pulled towards 0; a convolutional one normalizes one image by its own spatial
    statistics, noisy and biased. The moving averages learned that way do not match what the
    layer saw in training, and inference disagrees with training. PyTorch's `BatchNorm1d`
    refuses outright: "Expected more than 1 value per channel when training", which on a
    last batch of one crashes at the end of the first epoch.

    ## Example
    ```python
    model.fit(x_train, y_train, batch_size=1, epochs=10)

    train_set = TensorDataset(torch.randn(1025, 20), labels)
    loader = DataLoader(train_set, batch_size=64, shuffle=True)  # last batch: 1 sample
    ```

    ## Use instead
    ```python
    model.fit(x_train, y_train, batch_size=32, epochs=10)

    loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
    ```

    If memory allows only tiny batches, keep BatchNormalization frozen (Keras:
    `trainable = False` on its layers; PyTorch: `.eval()` on the BatchNorm modules) or use
    GroupNormalization / LayerNormalization instead.

    ## References
    - Ioffe & Szegedy, "Batch Normalization", ICML 2015: https://arxiv.org/abs/1502.03167
    - Wu & He, "Group Normalization", ECCV 2018: https://arxiv.org/abs/1803.08494
    - PyTorch `DataLoader` (`batch_size=1` default, `drop_last`): https://pytorch.org/docs/stable/data.html
    """

    code = "BN007"
    name = "batchnorm-batches-of-one"
    severity = Severity.WARNING
    summary = "BatchNormalization trained on batches of one sample"
    # Keras: a literal batch size of 1 (or a ``*_SIZE = 1`` constant); PyTorch: any DataLoader
    project_wide = True
    framework = "keras torch"
    prefilter = (
        ("batch_size=1", "batch_size = 1", "SIZE = 1", "SIZE=1", ".batch(1)", "DataLoader"),
        BN_MODEL_TOKENS + TORCHVISION_BN_TOKENS,
    )

    VALID = [
        """
import keras
model = keras.Sequential([keras.layers.Dense(16), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
model.fit(x, y, batch_size=32)
""",
        # no BatchNormalization: batches of one are fine (online learning)
        """
import keras
model = keras.Sequential([keras.layers.Dense(16), keras.layers.Dense(1)])
model.fit(x, y, batch_size=1)
""",
        # an evaluation loader with batches of one
        """
import torch.nn as nn
from torch.utils.data import DataLoader
net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
test_loader = DataLoader(test_set, batch_size=1)
""",
        # drop_last=True settles the last batch
        """
import torch
from torch.utils.data import DataLoader, TensorDataset
bn = torch.nn.BatchNorm1d(20)
train_set = TensorDataset(torch.randn(1025, 20), torch.zeros(1025))
loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
""",
        # cause 9: a loader read only to compute per-channel statistics feeds no model
        """
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
def init_params(net):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
def get_mean_and_std(dataset):
    loader = DataLoader(dataset, batch_size=1, shuffle=True)
    mean = torch.zeros(3)
    for inputs, targets in loader:
        mean += inputs.mean(dim=(0, 2, 3))
    return mean / len(dataset)
""",
        # the batch size of a ``**fit_kwargs`` dict is changed before the call: not 1 any more
        """
import keras
model = keras.Sequential([keras.layers.Dense(16), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
fit_kwargs = dict(epochs=5, batch_size=1)
fit_kwargs["batch_size"] = 64
model.fit(x, y, **fit_kwargs)
""",
    ]

    INVALID = [
        # a loader without shuffling whose batches, moved to the device, train a model with BatchNorm
        Invalid(
            """
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision.models import resnet50
loader = DataLoader(images_set, batch_size=1, num_workers=8)
model = nn.Sequential(resnet50(weights="DEFAULT"), nn.Linear(1000, 26))
model.train()
for epoch in range(10):
    for i, (images, targets) in enumerate(loader):
        images = images.to(device)
        loss = criterion(model(images), targets.to(device))
        loss.backward()
"""
        ),
        # cause 9: the batch size comes through a ``**train_kwargs`` dict
        Invalid(
            """
import torchvision
from torch.utils.data import DataLoader
train_kwargs = dict(batch_size=1, shuffle=True)
model = torchvision.models.resnet18(num_classes=10)
loader = DataLoader(train_set, **train_kwargs)
for x, y in loader:
    loss_fn(model(x), y).backward()
"""
        ),
        Invalid(
            """
from tensorflow import keras
model = keras.Sequential([keras.layers.Dense(64), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(x_train, y_train, batch_size=1, epochs=20)
"""
        ),
        Invalid(
            """
import torchvision
from torch.utils.data import DataLoader
model = torchvision.models.resnet18(num_classes=10)
train_loader = DataLoader(train_set, batch_size=1, shuffle=True)
"""
        ),
        # the last batch of one
        Invalid(
            """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
N = 1025
net = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 2))
dataset = TensorDataset(torch.randn(N, 20), torch.randint(0, 2, (N,)))
loader = DataLoader(dataset, batch_size=64, shuffle=True)
"""
        ),
        # PyTorch's default batch_size is 1
        Invalid(
            """
import torch.nn as nn
import torch.utils.data as data
model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16))
loader = data.DataLoader(train_dataset, shuffle=True)
"""
        ),
        # batch size 1 through a ``**fit_kwargs`` dict (cause 9)
        Invalid(
            """
import keras
model = keras.Sequential([keras.layers.Dense(16), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
fit_kwargs = dict(epochs=5, batch_size=1)
model.fit(x, y, **fit_kwargs)
"""
        ),
        # a tf.data pipeline batched by a constant that is 1
        Invalid(
            """
import tensorflow as tf
BATCH_SIZE = 1
model = tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3), tf.keras.layers.BatchNormalization()])
train_ds = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(100).batch(BATCH_SIZE).prefetch(2)
model.fit(train_ds, epochs=3)
"""
        ),
    ]

    def check(self, ctx: FileContext) -> Iterator[Violation]:
        yield from self._keras(ctx)
        if ctx.imports.imports_from("torch") and ctx.flow.loaders:
            yield from self._torch(ctx, _Facts(ctx))

    def _keras(self, ctx: FileContext) -> Iterator[Violation]:
        # ``fit`` calls, their batch sizes (constants, ``**fit_kwargs`` dicts, ``tf.data`` pipelines batched
        # with ``.batch(1)``) and the model they train come from the flow analysis.
        involves_bn = None
        for fit in ctx.flow.of(KerasFit):
            if fit.batch_size == 1:
                how = "batch_size=1"
            elif fit.batched_by == 1:
                how = "the dataset is batched with .batch(1)"
            else:
                continue
            carries = fit.module.contains_bn()
            if carries is None:
                if involves_bn is None:
                    involves_bn = ctx.flow.builds_batchnorm()
                carries = involves_bn
            if carries:
                owner = ctx.code(fit.node.func.value)
                yield Violation(
                    fit.node,
                    f"`{owner}.fit()`{fit.module.provenance('BatchNormalization')} trains on batches of one ({how}): "
                    f"{_KERAS_EFFECT}; use a batch size of 16 or "
                    f"more, or keep the BatchNormalization layers frozen (trainable = False) or use "
                    f"GroupNormalization/LayerNormalization",
                )

    def _torch(self, ctx: FileContext, facts: "_Facts") -> Iterator[Violation]:
        # The loaders, their batch sizes (through constants and ``**loader_kwargs`` dicts) and what
        # their batches feed come from the flow analysis; dataset sizes from the file's literals.
        for loader in ctx.flow.loaders:
            call, name = loader.call, loader.name
            feeds = loader.feeds_batchnorm_in_training()
            if feeds is False:  # read here, and no training forward of a BatchNorm model sees its batches
                continue
            if feeds is None and not (facts.torch_bn and facts.is_training_loader(call, name, ctx)):
                continue  # its batches are read elsewhere: a training loader of a file with BatchNorm models
            label = f"`{name}`" if name else "this DataLoader"
            keywords = loader.keywords
            if ("batch_sampler" in keywords or "sampler" in keywords) and "batch_size" not in keywords:
                continue
            size = _batch_arg(call)
            batch = loader.batch_size
            if batch is None and size is not None:
                batch = facts.int_of(size)
            if batch == 1:
                given = "batch_size" in keywords
                how = "batch_size=1" if given else "DataLoader's default batch_size is 1"
                yield Violation(
                    call,
                    f"{label} feeds a model with BatchNorm batches of one sample ({how}): {_TORCH_EFFECT}; "
                    f"use batch_size=16 or more, or keep the BatchNorm modules in eval() / use GroupNorm",
                )
                continue
            if batch is None or batch < 2 or "drop_last" in keywords or "**" in keywords:
                continue
            dataset = _keyword(call, "dataset") or (call.args[0].value if call.args and call.args[0].keyword is None else None)
            samples = facts.size_of(dataset) if dataset is not None else None
            if samples is not None and samples % batch == 1:
                yield Violation(
                    call,
                    f"{label} splits {samples} samples into batches of {batch}, so the last batch of every epoch "
                    f"holds one sample: {_TORCH_EFFECT}; pass drop_last=True",
                )


def _keyword(call: cst.Call, name: str) -> cst.BaseExpression | None:
    return next((a.value for a in call.args if a.keyword is not None and a.keyword.value == name), None)


def _batch_arg(call: cst.Call) -> cst.BaseExpression | None:
    value = _keyword(call, "batch_size")
    if value is None:
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        value = positional[1] if len(positional) > 1 else None
    return value


class _Facts:
    """Literal sizes, loaders and BatchNorm use in one file (scope-insensitive; ambiguous names give up).

    Built only for files with a ``DataLoader``, in one pass over the tree."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.values: dict[str, list[cst.BaseExpression]] = {}
        self.split_sizes: dict[str, list[cst.BaseExpression]] = {}
        self.trained_names: set[str] = set()
        self.torch_bn = False
        seen: set[str] = set()
        for node in walk(ctx.module):
            if isinstance(node, (cst.Assign, cst.AnnAssign)) and node.value is not None:
                for target in [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]:
                    self._bind(target, node.value)
            elif isinstance(node, cst.For):
                name = _loop_over(node)
                if name and _trains(node.body):
                    self.trained_names.add(name)
            elif isinstance(node, (cst.Name, cst.Attribute)) and not self.torch_bn:
                last = node.value if isinstance(node, cst.Name) else node.attr.value
                if last not in seen:  # the first reference of each name decides, as the import does
                    seen.add(last)
                    self.torch_bn = self.is_torch_bn(node)

    def _bind(self, target, value) -> None:
        if isinstance(target, cst.Name):
            self.values.setdefault(target.value, []).append(value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            # ``train_set, val_set = random_split(dataset, [900, 101])``
            sizes = None
            if isinstance(value, cst.Call) and (dotted(value.func) or "").endswith("random_split") and len(value.args) > 1:
                lengths = value.args[1].value
                if isinstance(lengths, (cst.List, cst.Tuple)) and len(lengths.elements) == len(target.elements):
                    sizes = [e.value for e in lengths.elements]
            for i, element in enumerate(target.elements):
                if isinstance(element.value, cst.Name):
                    name = element.value.value
                    if sizes is not None:
                        self.split_sizes.setdefault(name, []).append(sizes[i])
                    else:  # unpacked from something else: two entries, never a single known value
                        self.values.setdefault(name, []).extend([cst.Name("_unknown")] * 2)

    def is_torch_bn(self, node) -> bool:
        last = node.value if isinstance(node, cst.Name) else node.attr.value
        if not (TORCH_BN_CLASS.match(last) or TORCHVISION_BN.match(last)):
            return False
        qualname = self.ctx.imports.qualname(node)  # resolved only for names that can match
        return is_torch_bn_class(qualname) or is_torchvision_bn_model(qualname)

    def is_training_loader(self, call: cst.Call, name: str | None, ctx: FileContext) -> bool:
        shuffle = _keyword(call, "shuffle")
        if isinstance(shuffle, cst.Name) and shuffle.value == "True":
            return True
        if name is not None and name in self.trained_names:
            return True
        dataset = call.args[0].value if call.args else None
        texts = [name or ""] + ([ctx.code(dataset)] if dataset is not None else [])
        return any("train" in t.lower() for t in texts)

    # -- values ----------------------------------------------------------------------------

    def _single(self, name: str) -> cst.BaseExpression | None:
        values = self.values.get(name, [])
        return values[0] if len(values) == 1 else None

    def int_of(self, node, depth: int = 0) -> int | None:
        if depth > 8 or node is None:
            return None
        if isinstance(node, cst.Integer):
            try:
                return int(node.value, 0)
            except ValueError:
                return None
        if isinstance(node, cst.Name):
            return self.int_of(self._single(node.value), depth + 1)
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
            value = self.int_of(node.expression, depth + 1)
            return None if value is None else -value
        if isinstance(node, cst.BinaryOperation):
            left, right = self.int_of(node.left, depth + 1), self.int_of(node.right, depth + 1)
            if left is None or right is None:
                return None
            op = node.operator
            if isinstance(op, cst.Add):
                return left + right
            if isinstance(op, cst.Subtract):
                return left - right
            if isinstance(op, cst.Multiply):
                return left * right
            if isinstance(op, cst.FloorDivide) and right:
                return left // right
        return None

    def size_of(self, node, depth: int = 0) -> int | None:
        """The number of samples of a dataset or tensor expression, where the file shows it."""
        if depth > 8 or node is None:
            return None
        if isinstance(node, cst.Name):
            if node.value in self.split_sizes:
                sizes = self.split_sizes[node.value]
                return self.int_of(sizes[0]) if len(sizes) == 1 else None
            return self.size_of(self._single(node.value), depth + 1)
        if isinstance(node, (cst.List, cst.Tuple)):
            return len(node.elements) if all(isinstance(e, cst.Element) for e in node.elements) else None
        if isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Slice):
            part = node.slice[0].slice
            whole = self.size_of(node.value, depth + 1)
            start = self.int_of(part.lower) if part.lower is not None else 0
            stop = self.int_of(part.upper) if part.upper is not None else whole
            if part.step is not None or start is None or stop is None:
                return None
            if whole is not None:
                stop = min(stop, whole)
            return max(stop - start, 0)
        if not isinstance(node, cst.Call):
            return None
        last = node.func.attr.value if isinstance(node.func, cst.Attribute) else dotted(node.func)
        args = [a.value for a in node.args if a.keyword is None]
        if last in ("TensorDataset", "list", "tuple", "tensor", "as_tensor", "array", "asarray", "from_numpy"):
            return self.size_of(args[0], depth + 1) if args else None
        if last == "Subset":
            return self.size_of(args[1] if len(args) > 1 else _keyword(node, "indices"), depth + 1)
        if last in ("range", "arange"):
            ints = [self.int_of(a) for a in args[:2]]
            if None in ints or not ints:
                return None
            return ints[0] if len(ints) == 1 else ints[1] - ints[0]
        if last == "randint":
            shape = _keyword(node, "size") or (args[2] if len(args) > 2 else None)
            return self._first_dim(shape)
        if last in _TENSOR_MAKERS:
            shape = _keyword(node, "size") or (args[0] if args else None)
            return self._first_dim(shape)
        return None

    def _first_dim(self, shape) -> int | None:
        if isinstance(shape, (cst.Tuple, cst.List)):
            return self.int_of(shape.elements[0].value) if shape.elements else None
        return self.int_of(shape)


def _loop_over(loop: cst.For) -> str | None:
    """The loader a loop iterates: ``for b in loader``, ``enumerate(loader)``, ``tqdm(loader)``."""
    node = loop.iter
    while isinstance(node, cst.Call) and node.args:
        node = node.args[0].value
    return node.value if isinstance(node, cst.Name) else None


def _trains(body) -> bool:
    """Does a loop body call ``.backward()`` or ``.step()``?"""
    return any(
        isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in ("backward", "step")
        for node in walk(body)
    )
