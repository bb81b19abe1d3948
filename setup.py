"""Build script for the C engine (``hother.cancelable._engine``).

The pure C core lives in ``csrc/`` (no Python.h); the CPython binding lives in
``src/hother/cancelable/_ext/``. Both are compiled into one extension module.
Set ``HOTHER_CANCELABLE_SANITIZE=1`` to build with ASan+UBSan, ``HOTHER_CANCELABLE_COVERAGE=1``
for gcov instrumentation.
"""

import glob
import os

from setuptools import Extension, setup

extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers",
                      "-Wno-cast-function-type", "-fvisibility=hidden"]
extra_link_args: list[str] = []
if os.environ.get("HOTHER_CANCELABLE_SANITIZE"):
    extra_compile_args += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                           "-fno-sanitize-recover=undefined"]
    extra_link_args += ["-fsanitize=address,undefined"]
elif os.environ.get("HOTHER_CANCELABLE_COVERAGE"):
    extra_compile_args += ["-O0", "-g", "--coverage"]
    extra_link_args += ["--coverage"]
else:
    # -fno-plt: calls into libpython go through the GOT directly instead of a PLT stub each
    # (fewer instruction-cache misses and mispredicted jumps when the hot path runs cold)
    extra_compile_args += ["-O2", "-fno-plt"]

sources = sorted(glob.glob("csrc/*.c")) + sorted(glob.glob("src/hother/cancelable/_ext/*.c"))

setup(
    ext_modules=[
        Extension(
            "hother.cancelable._engine",
            sources=sources,
            include_dirs=["csrc", "src/hother/cancelable/_ext"],
            # the core allocates through the binding (PyMem_Raw*: tracemalloc sees it)
            define_macros=[("CC_ALLOC_EXTERN", "1")],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            libraries=["pthread"],
        )
    ],
)
