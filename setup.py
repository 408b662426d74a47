"""Build dt_fast._C with CMake (the source of truth for the C++ build); setuptools only drives it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension built by CMakeLists.txt at the repository root."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configure and build with CMake into the directory setuptools expects the module in."""

    def build_extension(self, ext: Extension) -> None:
        if shutil.which("cmake") is None:
            raise RuntimeError("dt_fast needs cmake >= 3.18 on PATH to build its C++ extension")
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
        cmake_args += [a for a in os.environ.get("CMAKE_ARGS", "").split() if a]
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", str(ROOT), *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "--target", "_C", "-j", jobs], cwd=build_temp, check=True)


setup(ext_modules=[CMakeExtension("dt_fast._C")], cmdclass={"build_ext": CMakeBuild})
