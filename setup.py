"""Build dt_fast._C with CMake (the source of truth for the C++ build); setuptools only drives it.

cmake and ninja are build requirements (their PyPI packages, pyproject.toml), so a machine needs only a C++17
compiler. Environment: CMAKE_ARGS adds CMake arguments (split as a shell would), CMAKE_GENERATOR picks another
generator than Ninja, CMAKE_BUILD_PARALLEL_LEVEL sets the build jobs (default: all cores), DEBUG=1 builds Debug.
"""

import importlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def find_tool(name: str) -> str | None:
    """The cmake or ninja binary: the one of the installed PyPI package (a build requirement), else one on PATH."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return shutil.which(name)
    bin_dir = module.CMAKE_BIN_DIR if name == "cmake" else module.BIN_DIR
    return shutil.which(name, path=bin_dir) or shutil.which(name)


def cached_generator(build_dir: Path) -> str | None:
    """The generator `build_dir` was configured with, from its CMakeCache.txt (None if never configured)."""
    cache = build_dir / "CMakeCache.txt"
    if not cache.exists():
        return None
    prefix = "CMAKE_GENERATOR:INTERNAL="
    return next((line[len(prefix) :] for line in cache.read_text().splitlines() if line.startswith(prefix)), None)


class CMakeExtension(Extension):
    """An extension built by CMakeLists.txt at the repository root."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configure and build with CMake into the directory setuptools expects the module in."""

    def build_extension(self, ext: Extension) -> None:
        cmake = find_tool("cmake")
        if cmake is None:
            raise RuntimeError("dt_fast needs cmake >= 3.18 to build its C++ extension: pip install cmake")
        import pybind11

        extdir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_type = "Debug" if os.environ.get("DEBUG") == "1" else "Release"
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
        ]
        user_args = shlex.split(os.environ.get("CMAKE_ARGS", ""))
        ninja = find_tool("ninja")
        generator = os.environ.get("CMAKE_GENERATOR") or None
        if generator is None and ninja and not any(a.startswith("-G") for a in user_args):
            generator = "Ninja"
        if generator is not None:
            cmake_args += ["-G", generator]
        if generator == "Ninja" and ninja:
            cmake_args.append(f"-DCMAKE_MAKE_PROGRAM={ninja}")
        # CMake refuses to switch generators in a configured build dir: one made with another generator starts afresh.
        if generator is not None and cached_generator(build_temp) not in (None, generator):
            (build_temp / "CMakeCache.txt").unlink()
            shutil.rmtree(build_temp / "CMakeFiles", ignore_errors=True)
        jobs = [] if "CMAKE_BUILD_PARALLEL_LEVEL" in os.environ else ["-j", str(os.cpu_count() or 2)]
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_temp), *cmake_args, *user_args], check=True)
        subprocess.run([cmake, "--build", str(build_temp), "--target", "_C", *jobs], check=True)


setup(ext_modules=[CMakeExtension("dt_fast._C")], cmdclass={"build_ext": CMakeBuild})
