"""Only the optional C kernel lives here; everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("blurforge._linear", ["blurforge/_linear.c"], extra_compile_args=["-O3"],
                             optional=True)])
