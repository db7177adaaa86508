"""The compiled modules of headwater; everything else is declared in pyproject.toml.

``headwater.features._kinds`` and ``_pass`` (the feature kinds and the pass that applies
them) and ``headwater.contract._accept`` (the validator's checks after its batch decode)
are Python modules that Cython compiles in pure-Python mode, C types from the ``.pxd``
files beside them where there are any. Without a C compiler (or without Cython) headwater installs
without them and runs the same modules as Python, which compute the same states more
slowly. The ``.pyx`` modules (the JSON guard, the readers of bus records, which share
``_msgpack.pxd``, and the writers of them, which share ``_buffer.pxd``) have a Python
path beside them that gives the same results.
"""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # only where the build requirements were bypassed: pure Python
    ext_modules = []
else:
    ext_modules = cythonize(
        [
            Extension(
                f"headwater.features.{name}",
                [f"src/headwater/features/{name}.py"],
                # The C types: Cython finds them beside the module; listed so that a
                # source distribution carries them too.
                depends=[f"src/headwater/features/{name}.pxd"],
            )
            for name in ("_kinds", "_pass")
        ]
        + [
            # The JSON guard: duplicate keys and depth, one pass over a request's bytes.
            Extension("headwater._jsonguard._compiled", ["src/headwater/_jsonguard/_compiled.pyx"]),
            # A poll's records read in place from the SQLite bus's stored batches.
            Extension(
                "headwater.bus._batch",
                ["src/headwater/bus/_batch.pyx"],
                depends=[
                    "src/headwater/_buffer.pxd",
                    "src/headwater/_msgpack.pxd",
                    "src/headwater/bus/_batch.pxd",
                ],
            ),
            # The checks of a decoded batch's fast path (its window, its envelope), a
            # Python module compiled in pure-Python mode.
            Extension("headwater.contract._accept", ["src/headwater/contract/_accept.py"]),
            # The gateway's bus records for a batch of validated events.
            Extension(
                "headwater.ingest._records",
                ["src/headwater/ingest/_records.pyx"],
                depends=["src/headwater/_buffer.pxd"],
            ),
            # The archive's reader: bus records straight to Arrow buffers.
            Extension(
                "headwater.archive._columns",
                ["src/headwater/archive/_columns.pyx"],
                depends=["src/headwater/_buffer.pxd", "src/headwater/_msgpack.pxd"],
            ),
            # The feature consumer's reader: bus records to a batch's columns.
            Extension(
                "headwater.features._records",
                ["src/headwater/features/_records.pyx"],
                depends=[
                    "src/headwater/_msgpack.pxd",
                    "src/headwater/features/_records.pxd",
                    "src/headwater/bus/_batch.pxd",
                ],
            ),
            # The feature pass over a batch's stored rows, without a Python object per
            # value (C++ for its vectors).
            Extension(
                "headwater.features._rows",
                ["src/headwater/features/_rows.pyx"],
                depends=["src/headwater/_msgpack.pxd", "src/headwater/features/_records.pxd"],
                language="c++",
            ),
        ],
        build_dir="build/cython",  # the generated C stays out of the source tree
    )
    for extension in ext_modules:
        # Where no C compiler is found, headwater installs without it (cythonize does
        # not carry this flag over from the extensions it is given).
        extension.optional = True

setup(ext_modules=ext_modules)
