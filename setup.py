"""Build of the C extension embgemma._core (metadata lives in pyproject.toml).

Environment switches:
  EMBGEMMA_OPENMP=0     build without OpenMP (serial); default: use it when the compiler has it
  EMBGEMMA_WERROR=1     turn compiler warnings into errors
  EMBGEMMA_CFLAGS="..." extra compiler flags (e.g. sanitizers), EMBGEMMA_LDFLAGS likewise
"""

import os
import shlex
import subprocess
import sys
import tempfile
import sysconfig

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = [
    "csrc/module.c",
    "csrc/json.c",
    "csrc/util.c",
    "csrc/pack.c",
    "csrc/safetensors.c",
    "csrc/gguf.c",
    "csrc/config.c",
    "csrc/load.c",
    "csrc/encode.c",
    "csrc/forward.c",
    "csrc/dispatch.c",
    "csrc/kernels_scalar.c",
    "csrc/kernels_avx2.c",
    "csrc/kernels_avxvnni.c",
    "csrc/kernels_avx512.c",
    "csrc/testing.c",
]


def _compiler_has_openmp(cc):
    """Compile and link a tiny OpenMP program; True when the toolchain supports -fopenmp."""
    src = "#include <omp.h>\nint main(void){\n#pragma omp parallel\n{}\nreturn omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as d:
        c = os.path.join(d, "t.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(cc + [c, "-fopenmp", "-o", os.path.join(d, "t")], capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


class BuildExt(build_ext):
    def build_extensions(self):
        cc = self.compiler.compiler_so[:1] if hasattr(self.compiler, "compiler_so") else ["cc"]
        want = os.environ.get("EMBGEMMA_OPENMP", "auto")
        use_omp = want != "0" and _compiler_has_openmp(cc)
        if want == "1" and not use_omp:
            sys.exit("EMBGEMMA_OPENMP=1 but the compiler cannot build OpenMP programs")
        if not use_omp:
            print("embgemma: building without OpenMP (serial)", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = ["-std=c11", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wpointer-arith",
                                      "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                                      "-fno-math-errno"]
            ext.extra_link_args = []
            if use_omp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
            else:
                ext.extra_compile_args.append("-Wno-unknown-pragmas")
            if os.environ.get("EMBGEMMA_WERROR") == "1":
                ext.extra_compile_args.append("-Werror")
            ext.extra_compile_args += shlex.split(os.environ.get("EMBGEMMA_CFLAGS", ""))
            ext.extra_link_args += shlex.split(os.environ.get("EMBGEMMA_LDFLAGS", ""))
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "embgemma._core",
            sources=SOURCES,
            include_dirs=["csrc", np.get_include()],
            define_macros=[("_GNU_SOURCE", "1")],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
