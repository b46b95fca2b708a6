"""The public face: exactly these names, each importable, every module with an ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import aiodisp

ROOT_NAMES = {
    "DEFAULT_TIMEOUT",
    "AdapterError",
    "DatagramSink",
    "DatagramTransport",
    "DispatchError",
    "Dispatcher",
    "DispatcherClosed",
    "DuplicateKeyError",
    "Framing",
    "Kind",
    "Link",
    "MessageAdapter",
    "MessageTooLarge",
    "PeerRejected",
    "PeerUnreachable",
    "Received",
    "ReliabilityUnavailable",
    "RequestTimeout",
    "RetryBudget",
    "RetryPolicy",
    "ServeStats",
    "Server",
    "Stats",
    "TransportError",
    "__version__",
    "open_memory_pair",
    "open_udp",
    "open_unix",
}

PUBLIC_MODULES = {
    "aiodisp.errors": {
        "AdapterError", "DispatchError", "DispatcherClosed", "DuplicateKeyError",
        "MessageTooLarge", "PeerRejected", "PeerUnreachable", "ReliabilityUnavailable",
        "RequestTimeout", "TransportError",
    },
    "aiodisp.adapters": {"IdMessage", "IdPrefixAdapter", "JsonAdapter", "MsgpackAdapter"},
    "aiodisp.sync": {"SyncDispatcher", "open_memory_pair", "open_udp", "open_unix"},
}


def all_modules() -> list[str]:
    """Every module of the package but ``__main__`` (importing it runs the CLI)."""
    names = ["aiodisp"]
    for info in pkgutil.walk_packages(aiodisp.__path__, "aiodisp."):
        if info.name != "aiodisp.__main__":
            names.append(info.name)
    return sorted(names)


def test_the_root_exports_exactly_the_public_names() -> None:
    assert set(aiodisp.__all__) == ROOT_NAMES
    for name in aiodisp.__all__:
        assert getattr(aiodisp, name) is not None


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES))
def test_each_public_submodule_exports_its_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) >= PUBLIC_MODULES[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it lacks"


def test_the_errors_are_the_same_objects_from_the_root_and_from_errors() -> None:
    errors = importlib.import_module("aiodisp.errors")
    for name in errors.__all__:
        assert getattr(aiodisp, name) is getattr(errors, name)
        assert issubclass(getattr(errors, name), aiodisp.DispatchError)


@pytest.mark.parametrize("module", all_modules())
def test_every_module_declares_its_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert isinstance(getattr(mod, "__all__", None), list | tuple), f"{module} has no __all__"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it lacks"


def test_private_modules_stay_private() -> None:
    """Users import from the root and the public sub-modules; everything else starts with _."""
    public = {"aiodisp", *PUBLIC_MODULES, "aiodisp.ids", "aiodisp.metrics", "aiodisp.retry",
              "aiodisp.stats"}
    for module in all_modules():
        if module in public or module.startswith("aiodisp.cli"):
            continue
        last = module.rsplit(".", 1)[1]
        parents = module.split(".")[1:]
        assert any(part.startswith("_") for part in parents), f"{module} looks public ({last})"
