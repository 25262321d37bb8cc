"""Only the optional C kernels live here; everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension(name, [f"blurforge/{name.split('.')[1]}.c"], extra_compile_args=["-O3"], optional=True)
                   for name in ("blurforge._linear", "blurforge._subframe", "blurforge._tenengrad")])
