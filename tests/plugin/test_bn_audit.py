"""The audit's building blocks: the import watcher and the arguments taken from fit()."""

from __future__ import annotations

import sys

import bn_models
import numpy as np

from pytest_bncheck import audit


def test_when_imported_calls_back_after_the_module_ran(tmp_path, monkeypatch):
    (tmp_path / "bn_fake_module.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    audit.when_imported("bn_fake_module", lambda module: seen.append(module.VALUE))
    try:
        assert seen == []
        import bn_fake_module

        assert seen == [42]
        assert type(bn_fake_module.__loader__).__name__ == "SourceFileLoader"  # the real loader is put back
        assert not any(isinstance(f, audit._ImportWatcher) for f in sys.meta_path)
        audit.when_imported("bn_fake_module", lambda module: seen.append("now"))  # already imported
        assert seen == [42, "now"]
    finally:
        audit.remove_watchers()
        sys.modules.pop("bn_fake_module", None)


def test_check_arguments_follow_fit_validation_split_and_steps():
    x, y = bn_models.blobs()
    arguments = audit.check_arguments(
        {"x": x, "y": y, "batch_size": 16, "validation_split": 0.25, "class_weight": {0: 2.0}, "steps_per_epoch": 4}
    )
    assert len(arguments["x"]) == len(arguments["y"]) == 72  # Keras trains on the first 75%
    np.testing.assert_array_equal(arguments["x"], x[:72])
    assert arguments["batch_size"] == 16 and arguments["class_weight"] == {0: 2.0} and arguments["steps"] == 4
    assert audit.check_arguments({"x": (i for i in range(3))}) is None  # a one-shot generator: not audited
    assert arguments["shuffle"] is True and arguments["length_known"] is False  # fit's defaults; steps given
    unshuffled = audit.check_arguments({"x": x, "y": y, "shuffle": False})
    assert unshuffled["shuffle"] is False and unshuffled["length_known"] is True  # fit read x to its end


def test_updates_are_counted_and_loaded_statistics_are_told_apart():
    x, y = bn_models.blobs()
    fresh = bn_models.bn_mlp()
    count = audit.before_fit(fresh)
    fresh.fit(x, y, batch_size=32, epochs=2, verbose=0)
    audit.after_fit(fresh, count)
    audit.after_fit(fresh, count)  # idempotent: a callback and the audit may both report one fit
    assert sorted(audit.counted_updates(fresh).values()) == [(6, False), (6, False)]

    pretrained = bn_models.bn_mlp()
    pretrained.fit(x, y, batch_size=32, epochs=1, verbose=0)  # unobserved updates
    count = audit.before_fit(pretrained)
    pretrained.fit(x, y, batch_size=32, epochs=1, verbose=0)
    audit.after_fit(pretrained, count)
    # Seen first with trained statistics: counted from there, as a share of those loaded values.
    assert sorted(audit.counted_updates(pretrained).values()) == [(3, True), (3, True)]
