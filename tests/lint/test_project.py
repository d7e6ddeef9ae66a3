"""Cross-file findings (cause 2 of issue 11): the files of a run are one project, imports between
them resolve, and imported modules are read even when not given (pre-commit passes only the
changed files). Run through the installed command, as a user runs it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .helpers import run_cli

ENCODER = """
import torch.nn as nn


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x):
        return self.bn(self.conv(x))
"""

PLAIN = """
import torch.nn as nn


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x)
"""

TRAIN = """
import torch
{import_line}

encoder = {ctor}
for p in encoder.parameters():
    p.requires_grad = False
head = torch.nn.Linear(16, 2)
for x, y in loader:
    loss = criterion(head(encoder(x).mean((2, 3))), y)
    loss.backward()
"""

#: a training helper of another module: train() mode, a forward, backward()
TRAIN_HELPER = """
            def {name}(model, loader, optimizer):
                model.train()
                for x, y in loader:
                    loss = criterion(model(x), y)
                    loss.backward()
                    optimizer.step()
"""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def findings(root: Path, *args: str) -> list[dict]:
    result = run_cli(*args, "--format", "json", cwd=root)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)["findings"]


def test_a_model_from_a_package_reexport_is_found_with_only_the_changed_file_given(tmp_path):
    # models/__init__.py re-exports Encoder; pre-commit passes train.py alone
    write(tmp_path, {
        "models/__init__.py": "from .encoder import Encoder\n",
        "models/encoder.py": ENCODER,
        "train.py": TRAIN.format(import_line="from models import Encoder", ctor="Encoder()"),
    })
    [finding] = findings(tmp_path, "train.py", "--select", "BN101")
    assert finding["code"] == "BN101" and finding["line"] == 6
    # the evidence chain names where the model is defined
    assert "models/encoder.py:4" in finding["message"]


def test_every_import_form_resolves(tmp_path):
    forms = {
        "from models.encoder import Encoder as Enc": "Enc()",
        "import models.encoder as enc": "enc.Encoder()",
        "from models import encoder": "encoder.Encoder()",
        "from models import *": "Encoder()",
    }
    write(tmp_path, {"models/__init__.py": "from .encoder import *\n", "models/encoder.py": ENCODER})
    for i, (line, ctor) in enumerate(forms.items()):
        write(tmp_path, {f"train_{i}.py": TRAIN.format(import_line=line, ctor=ctor)})
    found = findings(tmp_path, ".", "--select", "BN101")
    assert sorted(f["path"] for f in found) == [f"train_{i}.py" for i in range(len(forms))]


def test_relative_imports_inside_a_package_and_builder_functions(tmp_path):
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/nets.py": """
            import torchvision

            def build():
                return torchvision.models.resnet50(weights="DEFAULT")
        """,
        "pkg/run.py": """
            import torch
            from .nets import build

            model = build()
            with torch.no_grad():
                out = model(images)
        """,
    })
    [finding] = findings(tmp_path, "pkg/run.py", "--select", "BN102")
    assert finding["code"] == "BN102" and "pkg/nets.py:3" in finding["message"]


def test_a_subclass_of_an_imported_module_with_batchnorm(tmp_path):
    write(tmp_path, {
        "base.py": ENCODER,
        "net.py": """
            import torch
            from base import Encoder

            class Net(Encoder):
                pass

            net = Net()
            with torch.no_grad():
                y = net(batch)
        """,
    })
    assert [f["code"] for f in findings(tmp_path, "net.py", "--select", "BN102")] == ["BN102"]


def test_look_alikes_stay_quiet(tmp_path):
    # a model without BatchNorm, a module outside the project, a broken module: no finding, no crash
    write(tmp_path, {
        "plain/encoder.py": PLAIN,
        "broken.py": "def (:\n",
        "a.py": TRAIN.format(import_line="from plain.encoder import Encoder", ctor="Encoder()"),
        "b.py": TRAIN.format(import_line="from somewhere_else import Encoder", ctor="Encoder()"),
        "c.py": TRAIN.format(import_line="from broken import Encoder", ctor="Encoder()"),
    })
    assert findings(tmp_path, "a.py", "b.py", "c.py", "--select", "BN1") == []


def test_a_keras_model_built_in_another_module_and_trained_in_a_custom_step(tmp_path):
    write(tmp_path, {
        "nets.py": """
            from tensorflow import keras

            def make_classifier():
                return keras.Sequential([keras.layers.Dense(32), keras.layers.BatchNormalization(),
                                         keras.layers.Dense(2)])
        """,
        "train.py": """
            import tensorflow as tf
            from nets import make_classifier

            model = make_classifier()
            for x, y in ds:
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x))
                optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        """,
    })
    [finding] = findings(tmp_path, "train.py", "--select", "BN008")
    assert finding["line"] == 7 and "nets.py:3" in finding["message"]


def test_a_notebook_importing_a_local_module(tmp_path):
    cell = TRAIN.format(import_line="from model import Encoder", ctor="Encoder()").strip().splitlines(keepends=True)
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": cell}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    write(tmp_path, {"model.py": ENCODER})
    (tmp_path / "train.ipynb").write_text(json.dumps(notebook))
    [finding] = findings(tmp_path, "train.ipynb", "--select", "BN101")
    assert finding["cell"] == 1


def test_a_training_function_of_another_module_trains_its_parameter(tmp_path):
    # engine.train(model) -> train_step(model) puts it in train() mode and calls backward: a namespace package
    write(tmp_path, {
        "lib/engine.py": TRAIN_HELPER.format(name="train_step") + """
            def train(model, loader, optimizer, epochs):
                for _ in range(epochs):
                    train_step(model=model, loader=loader, optimizer=optimizer)
        """,
        "finetune.py": """
            import torchvision
            from lib import engine

            model = torchvision.models.efficientnet_b0(weights="DEFAULT")
            for p in model.features.parameters():
                p.requires_grad = False
            engine.train(model, loader, optimizer, 5)
        """,
        "evaluate_only.py": """
            import torchvision
            from lib import engine

            model = torchvision.models.efficientnet_b0(weights="DEFAULT")
            for p in model.features.parameters():
                p.requires_grad = False
        """,
    })
    [finding] = findings(tmp_path, "finetune.py", "evaluate_only.py", "--select", "BN101")
    assert finding["path"] == "finetune.py" and finding["line"] == 6
    assert "lib/engine.py:8" in finding["message"]


def test_built_in_one_module_frozen_in_another_trained_by_a_third(tmp_path):
    # the evidence chain names all three places; the finding is at the model's first use in the trained file
    write(tmp_path, {
        "model/resnet.py": "import torchvision.models as models\n\nmodel_conv = models.resnet18(weights='DEFAULT')\n",
        "config.py": """
            import torch
            from model.resnet import model_conv

            for param in model_conv.parameters():
                param.requires_grad = False
        """,
        "routines/train.py": TRAIN_HELPER.format(name="train"),
        "main.py": """
            import torch
            from config import model_conv
            from routines.train import train

            train(model_conv, loader, optimizer)
        """,
        "unfrozen.py": """
            import torch
            from model.resnet import model_conv
            from routines.train import train

            train(model_conv, loader, optimizer)
        """,
    })
    [finding] = findings(tmp_path, "main.py", "unfrozen.py", "--select", "BN101")
    assert finding["path"] == "main.py" and finding["line"] == 2
    message = finding["message"]
    assert "model/resnet.py:3" in message and "frozen at config.py:4" in message and "routines/train.py:1" in message


CLASS_FREEZING_ITSELF = """
    import torch
    import torch.nn as nn
    import torchvision


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            net = torchvision.models.resnet50(weights="DEFAULT")
            self.body = nn.Sequential(*list(net.children())[:-2])
            self.head = nn.Linear(2048, 8)
            self.tune(True)

        def tune(self, on=True):
            for p in self.body.parameters():
                p.requires_grad = False
            for block in list(self.body.children())[5:]:
                for p in block.parameters():
                    p.requires_grad = on

        def forward(self, x):
            return self.head(self.body(x).mean((2, 3)))


    class Captioner(nn.Module):
        def __init__(self):
            super().__init__()
            cnn = torchvision.models.resnet50(weights="DEFAULT")
            self.cnn = nn.Sequential(*list(cnn.children())[:-1])
            self.out = nn.Linear(2048, 8)

        def forward(self, x):
            with torch.no_grad():
                f = self.cnn(x)
            return self.out(f.flatten(1))
"""


def test_a_class_of_another_module_that_freezes_its_own_backbone(tmp_path):
    # the freeze happens inside the imported class (in __init__, through its own method, or by running a
    # pretrained part under no_grad in forward): the finding is at the construction, the freeze named there
    write(tmp_path, {
        "models.py": CLASS_FREEZING_ITSELF,
        "train.py": """
            import torch
            from models import Captioner, Encoder

            encoder = Encoder()
            captioner = Captioner()
            for x, y in loader:
                encoder.train()
                loss = criterion(encoder(x), y) + criterion(captioner(x), y)
                loss.backward()
        """,
        "eval_parts.py": """
            import torch
            from models import Captioner, Encoder

            encoder = Encoder()
            captioner = Captioner()
            for x, y in loader:
                encoder.train()
                encoder.body.eval()
                captioner.train()
                captioner.cnn.eval()
                loss = criterion(encoder(x), y) + criterion(captioner(x), y)
                loss.backward()
        """,
    })
    found = findings(tmp_path, "train.py", "eval_parts.py", "--select", "BN101")
    assert [(f["path"], f["line"]) for f in found] == [("train.py", 4), ("train.py", 5)]
    assert "`Encoder.body` (`Encoder()` is defined in models.py:6, with BatchNorm) is frozen at models.py:15" in found[0]["message"]
    assert "`Captioner.cnn`" in found[1]["message"] and "runs under torch.no_grad() at models.py:34" in found[1]["message"]


KERAS_BLOCK = """
    from tensorflow import keras

    class ConvBlock(keras.layers.Layer):
        def __init__(self, filters):
            super().__init__()
            self.conv = keras.layers.Conv2D(filters, 3)
            self.bn = keras.layers.BatchNormalization()

        def call(self, x, training=True):
            return self.bn(self.conv(x), training=training)

    def make_classifier():
        return keras.Sequential([keras.layers.Dense(32), keras.layers.BatchNormalization(), keras.layers.Dense(2)])
"""

#: a script that trains the block in a custom step, then runs it on test data: {call}
KERAS_APP = """
    import tensorflow as tf
    from blocks import ConvBlock

    block = ConvBlock(16)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(block(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, block.trainable_variables), block.trainable_variables))

    features = {call}
"""


def test_a_keras_model_of_another_module_forced_into_training_mode_at_inference(tmp_path):
    write(tmp_path, {
        "blocks.py": KERAS_BLOCK,
        "predict.py": """
            from blocks import make_classifier

            model = make_classifier()
            model.load_weights("weights.h5")
            probabilities = model(x_test, training=True)
        """,
    })
    [finding] = findings(tmp_path, "predict.py", "--select", "BN004")
    assert finding["line"] == 5 and "blocks.py:12" in finding["message"]


def test_a_training_default_of_a_layer_class_of_another_module_relied_on(tmp_path):
    """``call(self, x, training=True)`` defined in one module, relied on by a plain call in another."""
    write(tmp_path, {"blocks.py": KERAS_BLOCK, "app.py": KERAS_APP.format(call="block(test_images)")})
    [finding] = findings(tmp_path, "app.py", "--select", "BN004")
    assert finding["line"] == 12 and "blocks.py:3" in finding["message"] and "ConvBlock" in finding["message"]


def test_a_training_default_of_another_module_never_relied_on_outside_the_step(tmp_path):
    write(tmp_path, {"blocks.py": KERAS_BLOCK, "app.py": KERAS_APP.format(call="block(test_images, training=False)")})
    assert findings(tmp_path, "app.py", "--select", "BN004") == []


def test_a_keras_model_of_another_module_fit_on_batches_of_one(tmp_path):
    write(tmp_path, {
        "blocks.py": KERAS_BLOCK,
        "train.py": """
            from blocks import make_classifier

            model = make_classifier()
            fit_args = dict(epochs=5, batch_size=1)
            model.fit(x_train, y_train, **fit_args)
        """,
    })
    [finding] = findings(tmp_path, "train.py", "--select", "BN007")
    assert finding["line"] == 5 and "blocks.py:12" in finding["message"]


# -- Keras: a base frozen in one module, unfrozen in another (BN001/BN002/BN003) ------------------

KERAS_BUILDER = """
    import keras

    def build_classifier():
        base = keras.applications.ResNet50(include_top=False, weights="imagenet")
        base.trainable = False
        inputs = keras.Input((224, 224, 3))
        x = base(inputs)
        return keras.Model(inputs, keras.layers.Dense(5)(x))
    """


def test_a_builder_whose_model_a_fine_tuning_script_unfreezes(tmp_path):
    write(tmp_path, {
        "models.py": KERAS_BUILDER,
        "fine_tune.py": """
            from models import build_classifier
            model = build_classifier()
            model.fit(train_ds, epochs=5)
            model.trainable = True
            model.fit(train_ds, epochs=2)
            """,
    })
    found = findings(tmp_path, ".", "--select", "BN001")
    assert [(f["path"], f["line"]) for f in found] == [("models.py", 7)]
    assert found[0]["message"].endswith("(the base is unfrozen at fine_tune.py:4)")
    # pre-commit passes only the changed builder: the fine-tuning script is still found
    assert [f["path"] for f in findings(tmp_path, "models.py", "--select", "BN001")] == ["models.py"]


def test_a_builder_nobody_unfreezes_is_only_a_latent_warning(tmp_path):
    write(tmp_path, {
        "models.py": KERAS_BUILDER,
        "extract.py": "from models import build_classifier\nmodel = build_classifier()\nmodel.fit(train_ds)\n",
        # an unfreeze that keeps BatchNormalization frozen does not count either
        "tune_safely.py": """
            import keras
            from models import build_classifier
            model = build_classifier()
            for layer in model.layers:
                if not isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = True
            """,
    })
    assert findings(tmp_path, ".", "--select", "BN001") == []
    [latent] = findings(tmp_path, ".", "--select", "BN001", "--latent")
    assert latent["path"] == "models.py" and latent["message"].startswith("latent (nothing in this project unfreezes it)")


def test_a_script_continuing_another_one_unfreezes_its_base(tmp_path):
    # course tasks split into scripts run one after another: the second uses the first one's names
    write(tmp_path, {
        "task/feature_extraction.py": """
            from tensorflow import keras
            base_model = keras.applications.Xception(weights="imagenet", include_top=False)
            pooled = keras.layers.GlobalAveragePooling2D()(base_model.output)
            model = keras.Model(inputs=base_model.input, outputs=keras.layers.Dense(3)(pooled))
            for layer in base_model.layers:
                layer.trainable = False
            model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            model.fit(train_set, epochs=3)
            """,
        "task/fine_tuning.py": """
            for layer in base_model.layers:
                layer.trainable = True
            model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy")
            model.fit(train_set, epochs=3)
            """,
        "task/unrelated.py": "base_model = None\nprint(base_model)\n",
    })
    found = {(f["path"], f["code"]): f for f in findings(tmp_path, ".", "--select", "BN001,BN003")}
    assert set(found) == {("task/feature_extraction.py", "BN001"), ("task/fine_tuning.py", "BN003")}
    assert "(the base is unfrozen at task/fine_tuning.py:2)" in found["task/feature_extraction.py", "BN001"]["message"]
    # the evidence chain: built and frozen in the first script, unfrozen in the second
    assert found["task/fine_tuning.py", "BN003"]["message"].endswith(
        "(`base_model` is built in task/feature_extraction.py:2, frozen at task/feature_extraction.py:5)")


def test_a_body_with_batchnorm_from_another_module_frozen_by_index_then_all_unfrozen(tmp_path):
    write(tmp_path, {
        "net/__init__.py": "",
        "net/body.py": """
            from keras.layers import Conv2D, BatchNormalization, LeakyReLU
            from keras.models import Model

            def conv_bn(x, filters):
                return LeakyReLU()(BatchNormalization()(Conv2D(filters, 3)(x)))

            def backbone(inputs):
                return Model(inputs, conv_bn(conv_bn(inputs, 16), 32))
            """,
        "train.py": """
            from keras.layers import Input, Lambda
            from keras.models import Model
            from net.body import backbone

            def create(frozen=6):
                image = Input((None, None, 3))
                body = backbone(image)
                for i in range(frozen): body.layers[i].trainable = False
                return Model(body.input, Lambda(lambda t: t)(body.output))

            model = create()
            model.fit(data, epochs=10)
            for i in range(len(model.layers)):
                model.layers[i].trainable = True
            model.fit(data, epochs=20)
            """,
    })
    [finding] = findings(tmp_path, ".", "--select", "BN003")
    assert (finding["path"], finding["line"]) == ("train.py", 14)
    assert "(`backbone()` is built in net/body.py:7)" in finding["message"]


def test_keras_look_alikes_across_modules_stay_quiet(tmp_path):
    write(tmp_path, {
        # a builder without BatchNormalization, unfrozen elsewhere
        "vgg.py": """
            import keras
            def build():
                base = keras.applications.VGG16(include_top=False)
                base.trainable = False
                return keras.Sequential([base, keras.layers.Dense(2)])
            """,
        "tune_vgg.py": "from vgg import build\nm = build()\nm.trainable = True\n",
        # two scripts could be continued: ambiguous, so neither is
        "a/one.py": "import keras\nbase = keras.applications.ResNet50()\nbase.trainable = False\nx = base(inputs)\n",
        "a/two.py": "import keras\nbase = keras.applications.ResNet50()\nbase.trainable = False\ny = base(inputs)\n",
        "a/next.py": "base.trainable = True\n",
    })
    assert findings(tmp_path, ".", "--select", "BN001,BN002,BN003") == []


def test_pre_commit_on_a_builder_in_a_package_finds_the_unchanged_fine_tuning_script(tmp_path):
    write(tmp_path, {
        "src/__init__.py": "",
        "src/models.py": KERAS_BUILDER,
        "scripts/fine_tune.py": """
            from src.models import build_classifier
            model = build_classifier()
            for layer in model.layers[-30:]:
                layer.trainable = True
            model.fit(train_ds)
            """,
        ".venv/lib/copy.py": "from src.models import build_classifier\nbuild_classifier().trainable = True\n",
    })
    [finding] = findings(tmp_path, "src/models.py", "--select", "BN001")
    assert finding["message"].endswith("(the base is unfrozen at scripts/fine_tune.py:4)")
