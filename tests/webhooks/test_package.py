"""The package's public surface."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import callcontrol.webhooks as webhooks

SERVER = str(Path(__file__).resolve().parents[2] / "server")


def test_all_is_complete_and_importable() -> None:
    assert sorted(webhooks.__all__) == webhooks.__all__
    for name in webhooks.__all__:
        assert hasattr(webhooks, name), name
    public = {
        name
        for name, value in vars(webhooks).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public == set(webhooks.__all__)


def test_the_gateway_side_does_not_need_the_reference_library() -> None:
    code = "import sys, callcontrol.webhooks; assert 'standardwebhooks' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SERVER})


def test_every_module_imports() -> None:
    for module in pkgutil.iter_modules(webhooks.__path__):
        importlib.import_module(f"callcontrol.webhooks.{module.name}")


def test_the_component_keeps_the_agreed_signature() -> None:
    init = inspect.signature(webhooks.WebhookService.__init__)
    assert list(init.parameters)[:3] == ["self", "config", "session_factory"]
    assert init.parameters["session_factory"].kind is inspect.Parameter.KEYWORD_ONLY
    for name in ("emit", "metrics"):
        assert not inspect.iscoroutinefunction(getattr(webhooks.WebhookService, name))
    for name in ("run", "shutdown"):
        assert inspect.iscoroutinefunction(getattr(webhooks.WebhookService, name))
    assert inspect.signature(webhooks.WebhookService.shutdown).parameters["grace"].default == 5.0
