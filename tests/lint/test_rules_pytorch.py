"""BN101–BN103 on realistic PyTorch code: every import form, paths through helpers, and look-alikes."""

from __future__ import annotations

import difflib
import json
import shutil
import textwrap
from pathlib import Path

import libcst as cst
import pytest

from lint.names import ImportMap
from lint.flow.events import Forward, Freeze
from lint.flow.walk import Flow

from .helpers import check, run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def codes(code, *rules):
    return check(code, codes=rules)[0]


def messages(code, *rules):
    _, _, result = check(code, codes=rules)
    return [(v[0], v[4], v[5]) for v in result.violations]


# Every import form of a torchvision BatchNorm model, and torch.hub / timm.
CONSTRUCTORS = {
    "import torchvision": "torchvision.models.resnet50(weights=None)",
    "from torchvision import models": "models.efficientnet_b0()",
    "import torchvision.models as tvm": "tvm.regnet_y_400mf()",
    "from torchvision.models import mobilenet_v3_large as backbone_fn": "backbone_fn()",
    "from torchvision.models.densenet import densenet121": "densenet121()",
    "from torchvision.models import inception_v3": "inception_v3(aux_logits=False)",
    "import torch.hub": "torch.hub.load('pytorch/vision', 'resnet18')",
    "import timm": "timm.create_model('resnet50d', pretrained=True)",
    "from torch.hub import load": "load('pytorch/vision', 'resnet18')",
    "import torchvision.models": "torchvision.models.get_model('resnet50')",
    "from torchvision.models import vgg16_bn": "vgg16_bn()",
}


@pytest.mark.parametrize("torch_import", ["import numpy as np, torch", "import torch.nn as nn\nimport torch", "from torch import nn, no_grad as ng"])
def test_bn102_every_form_of_importing_torch(torch_import):
    # The prefilter looks for an import of torch; check() asserts it lets each form through.
    with_ = "ng()" if " as ng" in torch_import else "torch.no_grad()"
    code = f"{torch_import}\nimport torchvision\nmodel = torchvision.models.resnet50()\nwith {with_}:\n    out = model(x)\n"
    assert codes(code, "BN102") == ["BN102"]


@pytest.mark.parametrize(("imports", "ctor"), CONSTRUCTORS.items())
def test_bn102_fresh_models_are_in_training_mode_in_every_import_form(imports, ctor):
    code = f"import torch\n{imports}\nmodel = {ctor}\nwith torch.no_grad():\n    out = model(x)\n"
    assert codes(code, "BN102") == ["BN102"]
    fixed_mode = code.replace("with torch.no_grad()", "model.eval()\nwith torch.no_grad()")
    assert codes(fixed_mode, "BN102") == []


@pytest.mark.parametrize(("imports", "ctor"), CONSTRUCTORS.items())
def test_bn101_frozen_backbone_in_every_import_form(imports, ctor):
    code = f"""
import torch
{imports}
model = {ctor}
for p in model.parameters():
    p.requires_grad = False
model.train()
for x, y in loader:
    loss_fn(model(x), y).backward()
"""
    assert codes(code, "BN101") == ["BN101"]


# -- BN101 --------------------------------------------------------------------------------------

BN101_FLAGGED = """
import torch
import torch.nn as nn
from torchvision.models import resnet50

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = resnet50(weights="DEFAULT")
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(2048, 10)

    def freeze_backbone(self):
        for name, param in self.backbone.named_parameters():
            param.requires_grad = False

    def forward(self, x):
        return self.head(self.backbone(x))

def train_one_epoch(model, loader, optimizer):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

net = Net()
net.freeze_backbone()
for epoch in range(3):
    train_one_epoch(net, loader, opt)
"""


def test_bn101_follows_methods_and_helpers_and_reports_the_freeze():
    found = messages(BN101_FLAGGED, "BN101")
    assert [(line, code) for line, code, _ in found] == [(15, "BN101")]
    assert "self.backbone" in found[0][2] and "running_mean" in found[0][2]


@pytest.mark.parametrize(
    "keep_bn_frozen",
    [
        # the frozen part back in eval mode after train()
        "    model.backbone.eval()\n",
        # its BatchNorm modules in eval mode
        "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm2d):\n            m.eval()\n",
        # the same through apply()
        "    model.apply(set_bn_eval)\n",
        # statistics frozen
        "    for m in model.backbone.modules():\n        if isinstance(m, nn.BatchNorm2d):\n"
        "            m.track_running_stats = False\n",
    ],
)
def test_bn101_quiet_when_batchnorm_is_kept_in_eval_mode(keep_bn_frozen):
    code = BN101_FLAGGED.replace("    model.train()\n", "    model.train()\n" + keep_bn_frozen) + textwrap.dedent(
        """
        def set_bn_eval(m):
            if type(m).__name__.startswith("BatchNorm"):
                m.eval()
        """
    )
    assert codes(code, "BN101") == []


def test_bn101_quiet_when_train_is_overridden_to_keep_batchnorm_in_eval():
    code = BN101_FLAGGED.replace(
        "    def forward(self, x):",
        "    def train(self, mode=True):\n        super().train(mode)\n        self.backbone.eval()\n        return self\n\n"
        "    def forward(self, x):",
    )
    assert codes(code, "BN101") == []


def test_bn101_look_alikes():
    quiet = [
        # FrozenBatchNorm2d replaces BatchNorm
        """
        import torchvision
        from torchvision.ops.misc import FrozenBatchNorm2d
        model = torchvision.models.resnet101(norm_layer=FrozenBatchNorm2d)
        model.requires_grad_(False)
        for x, y in loader:
            loss_fn(model(x), y).backward()
        """,
        # every parameter but BatchNorm's is frozen: BatchNorm is meant to train
        """
        import torchvision
        model = torchvision.models.resnet18()
        for name, p in model.named_parameters():
            if "bn" not in name:
                p.requires_grad = False
        for x, y in loader:
            loss_fn(model(x), y).backward()
        """,
        # only the head is frozen (a linear probe the other way round): no BatchNorm in it
        """
        import torchvision
        model = torchvision.models.resnet18()
        for p in model.fc.parameters():
            p.requires_grad = False
        for x, y in loader:
            loss_fn(model(x), y).backward()
        """,
        # a frozen teacher only ever run under no_grad in eval mode
        """
        import torch
        import torchvision
        teacher = torchvision.models.resnet50().eval()
        teacher.requires_grad_(False)
        student = torchvision.models.resnet18()
        for x, _ in loader:
            with torch.no_grad():
                target = teacher(x)
            loss_fn(student(x), target).backward()
        """,
        # no BatchNorm at all
        """
        import torch.nn as nn
        mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        mlp[0].requires_grad_(False)
        for p in mlp.parameters():
            p.requires_grad = False
        for x, y in loader:
            loss_fn(mlp(x), y).backward()
        """,
    ]
    for code in quiet:
        assert codes(code, "BN101") == [], code


def test_bn101_a_frozen_sequential_with_batchnorm_built_by_a_local_class():
    code = """
    import torch.nn as nn
    class ConvBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3)
            self.norm = nn.BatchNorm2d(c)
    encoder = nn.Sequential(ConvBlock(8), ConvBlock(8))
    encoder.requires_grad_(False)
    head = nn.Linear(8, 2)
    model = nn.Sequential(encoder, head)
    for x, y in loader:
        loss_fn(model(x), y).backward()
    """
    assert codes(code, "BN101") == ["BN101"]


# -- BN102 --------------------------------------------------------------------------------------


def test_bn102_every_inference_context():
    contexts = [
        ("with torch.inference_mode():\n    y = model(x)\n", "torch.inference_mode()"),
        ("with torch.set_grad_enabled(False):\n    y = model(x)\n", "set_grad_enabled"),
        ("@torch.no_grad()\ndef run(x):\n    return model(x)\nrun(x)\n", "decorated"),
        ("def predict(x):\n    return model(x)\npredict(x)\n", "predict()"),
        ("def evaluate_model():\n    return model(x)\nevaluate_model()\n", "evaluate_model()"),
        ("def run_inference(x):\n    return model.forward(x)\nrun_inference(x)\n", "run_inference()"),
    ]
    for body, expected in contexts:
        code = "import torch\nfrom torchvision.models import resnet18\nmodel = resnet18()\n" + body
        found = messages(code, "BN102")
        assert [c for _, c, _ in found] == ["BN102"], body
        assert expected in found[0][2]


def test_bn102_look_alikes():
    quiet = [
        # eval() through a chained constructor
        """
        import torch, torchvision
        model = torchvision.models.resnet18(weights="DEFAULT").eval().to("cpu")
        with torch.no_grad():
            model(x)
        """,
        # train(False) is eval()
        """
        import torch, torchvision
        model = torchvision.models.resnet18()
        model.train(False)
        with torch.no_grad():
            model(x)
        """,
        # a training loop with no_grad only for the metric
        """
        import torch, torchvision
        model = torchvision.models.resnet18()
        for x, y in loader:
            out = model(x)
            loss_fn(out, y).backward()
            with torch.no_grad():
                acc = (out.argmax(1) == y).float().mean()
        """,
        # the paths disagree: prefer silence
        """
        import torch, torchvision
        model = torchvision.models.resnet18()
        if args.deterministic:
            model.eval()
        with torch.no_grad():
            model(x)
        """,
        # set to eval inside the helper
        """
        import torch, torchvision
        model = torchvision.models.resnet18()
        def evaluate(net):
            net.eval()
            with torch.no_grad():
                return net(x)
        evaluate(model)
        """,
        # a no-grad target network without BatchNorm
        """
        import torch
        import torch.nn as nn
        target = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
        with torch.no_grad():
            q = target(state)
        """,
    ]
    for code in quiet:
        assert codes(code, "BN102") == [], code


def test_bn102_pytest_functions_are_not_inference(tmp_path):
    code = "import torchvision\n\ndef test_forward_shape():\n    model = torchvision.models.resnet18()\n    assert model(x).shape\n"
    assert codes(code, "BN102") == ["BN102"]  # a `test_` function outside a pytest file is an evaluation
    path = tmp_path / "test_models.py"
    path.write_text(code)
    result = run_cli(str(path), "--select", "BN102")
    assert result.returncode == 0, result.stdout


def test_bn102_unit_tests_that_run_batchnorm_in_training_mode_on_purpose_are_not_reported(tmp_path):
    # cause 10: a test comparing BatchNorm's training-mode output with a reference, under no_grad
    code = (
        "import torch\nimport torch.nn as nn\n\ndef check_against_reference(x, expected):\n"
        "    bn = nn.Sequential(nn.BatchNorm1d(4))\n    with torch.no_grad():\n        out = bn(x)\n"
        "    assert torch.allclose(out, expected)\n"
    )
    assert codes(code, "BN102") == ["BN102"]  # the same code outside a test file is inference in training mode
    for name in ("tests/helpers.py", "test_bn.py", "bn_test.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(code)
        result = run_cli(str(path), "--select", "BN102")
        assert result.returncode == 0, (name, result.stdout)


EPOCH_LOOP = """
import torch
import torch.nn as nn
net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))

def train_epoch(model):
    {train}
    for x, y in train_loader:
        loss_fn(model(x), y).backward()

def validate(model):
    model.eval()
    with torch.no_grad():
        return [model(x) for x, _ in val_loader]

for epoch in range(10):
    train_epoch(net)
    validate(net)
"""


def test_bn102_eval_carried_into_the_next_epoch_is_reported_at_the_loop_statement():
    found = messages(EPOCH_LOOP.format(train="pass"), "BN102")
    assert [(line, c) for line, c, _ in found] == [(18, "BN102")]
    assert "validate(net)" in found[0][2] and "model.eval()" in found[0][2]
    assert codes(EPOCH_LOOP.format(train="model.train()"), "BN102") == []


def test_bn102_eval_inline_in_a_while_loop():
    code = """
    import torch
    from torchvision import models
    model = models.shufflenet_v2_x1_0()
    step = 0
    while step < 1000:
        loss_fn(model(x), y).backward()
        if step % 100 == 0:
            pass
        model.eval()
        step += 1
    """
    found = messages(code, "BN102")
    assert [(line, c) for line, c, _ in found] == [(10, "BN102")]


# -- BN103 --------------------------------------------------------------------------------------


def test_bn103_fix_only_touches_the_reported_statement_and_keeps_comments():
    code = textwrap.dedent(
        """
        import torch
        import torchvision
        model = torchvision.models.resnet34(weights="DEFAULT")
        model.requires_grad = False ; x = 1  # freeze everything
        emb = torch.zeros(10, 4)
        emb.requires_grad = False
        model.fc.weight.requires_grad = False
        model.layer4.requires_grad = False
        """
    )
    found, fixed, _ = check(code, codes=("BN103",), fix=True)
    assert found == []  # nothing left after the fix
    before, after = code.splitlines(), fixed.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(before) == len(after) and changed == [4, 8]
    assert after[4] == "model.requires_grad_(False) ; x = 1  # freeze everything"
    assert after[8] == "model.layer4.requires_grad_(False)"
    cst.parse_module(fixed)
    assert check(fixed, codes=("BN103",), fix=True)[1] is None  # idempotent


def test_bn103_never_rewrites_tensors_or_parameters():
    code = """
    import torch
    import torch.nn as nn
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.scale.requires_grad = False
            self.proj = nn.Linear(4, 4)
            self.proj.weight.requires_grad = False
    w = torch.empty(3, requires_grad=True)
    w.requires_grad = False
    for p in Net().parameters():
        p.requires_grad = False
    for name, p in Net().named_parameters():
        p.requires_grad = False
    """
    assert codes(code, "BN103") == []


def test_bn103_modules_of_every_kind():
    code = """
    import torch.nn as nn
    def freeze(backbone: nn.Module):
        backbone.requires_grad = False
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.requires_grad = False
            self.eval = False
    lin = nn.Linear(4, 4)
    lin.requires_grad = False
    for child in lin.children():
        child.requires_grad = False
    """
    assert [line for line, _, _ in messages(code, "BN103")] == [4, 8, 9, 11, 13]


# -- the shared analysis, as BN007 uses it ------------------------------------------------------


def test_flow_answers_which_values_are_modules_with_batchnorm():
    source = textwrap.dedent(
        """
        import torch.nn as nn
        import torchvision
        a = torchvision.models.resnet18()
        b = nn.Sequential(nn.Linear(3, 3))
        c = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        for m in (a, b, c):
            pass
        a.requires_grad_(False)
        c(x)
        """
    )
    module = cst.parse_module(source)
    tm = Flow(module, ImportMap(module))
    # module_at answers for names where they are *used*
    [freeze] = tm.of(Freeze)
    assert freeze.module.label == "resnet18()" and freeze.module.contains_bn()
    [forward] = tm.of(Forward)
    assert tm.module_at(forward.node.func) is forward.module and forward.module.contains_bn() is True
    assert forward.mode.must("train")


# -- the bundled examples ----------------------------------------------------------------------


def test_every_pytorch_rule_fires_in_the_examples_and_the_done_right_file_is_quiet():
    result = run_cli(str(EXAMPLES), "--select", "BN1", "--format", "json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    findings = data["findings"] if isinstance(data, dict) else data
    assert {"BN101", "BN102", "BN103"} <= {f["code"] for f in findings}
    assert not [f for f in findings if "done_right" in json.dumps(f)]


def test_fix_on_the_example_changes_only_the_reported_line(tmp_path):
    target = tmp_path / "pytorch_fine_tuning.py"
    shutil.copy(EXAMPLES / "pytorch_fine_tuning.py", target)
    before = target.read_text()
    result = run_cli(str(target), "--select", "BN103", "--fix")
    assert result.returncode == 0, result.stdout + result.stderr
    after = target.read_text()
    diff = [l for l in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert diff == ["-        self.encoder.requires_grad = False", "+        self.encoder.requires_grad_(False)"]
    again = run_cli(str(target), "--select", "BN103", "--fix")
    assert again.returncode == 0 and target.read_text() == after
