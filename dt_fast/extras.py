"""Optional dependencies: import one, or raise an ImportError that names the extra installing it."""

from __future__ import annotations

import importlib
from types import ModuleType

# Top-level module -> (extra of pyproject.toml that installs it, its name on PyPI).
EXTRAS = {
    "envpool": ("envs", "envpool"),
    "gymnasium": ("envs", "gymnasium"),
    "matplotlib": ("video", "matplotlib"),
    "imageio_ffmpeg": ("video", "imageio-ffmpeg"),
    "pyarrow": ("formats", "pyarrow"),
    "datasets": ("formats", "datasets"),
    "minari": ("formats", "minari"),
    "transformers": ("bench", "transformers"),
    "accelerate": ("bench", "accelerate"),
    "onnx": ("bench", "onnx"),
    "onnxruntime": ("bench", "onnxruntime"),
}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`; if it (or its package) is missing: "<purpose> needs <package>: pip install 'dt-fast[<extra>]'".

    Only a missing module is translated: an ImportError raised while the module itself loads propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if top not in EXTRAS or err.name is None or not (module == err.name or module.startswith(err.name + ".")):
            raise
        extra, package = EXTRAS[top]
        raise ModuleNotFoundError(f"{purpose} needs {package}: pip install 'dt-fast[{extra}]'", name=err.name) from err
