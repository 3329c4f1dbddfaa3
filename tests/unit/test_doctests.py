"""Every docstring example in the package runs (River's convention: each public class shows a tiny stream)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("fairwatch", "fairwatch.monitor", "fairwatch.consumers", "fairwatch.alerts", "fairwatch.dashboards")


def modules() -> list[str]:
    found = set(PACKAGES)
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.update(info.name for info in pkgutil.walk_packages(package.__path__, f"{name}."))
    return sorted(found)


def test_every_subpackage_is_walked():
    names = modules()
    assert "fairwatch.monitor.api" in names and "fairwatch.monitor.scorer.counterfactuals" in names


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} of {runner.tries} examples in {name} failed (output above)"
