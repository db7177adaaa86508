"""The one compiled module of headwater; everything else is declared in pyproject.toml.

``headwater.features._native`` is the feature pass compiled to C with Cython. Without
it (no C compiler where headwater is installed) the engine runs the generated Python
pass, which computes the same states more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: where no C compiler is found, headwater installs without it.
        Extension(
            "headwater.features._native", ["src/headwater/features/_native.pyx"], optional=True
        ),
        Extension(
            "headwater._jsonguard._compiled",
            ["src/headwater/_jsonguard/_compiled.pyx"],
            optional=True,
        ),
    ],
)
