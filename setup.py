"""Build of the C extension embgemma._core (metadata lives in pyproject.toml).

Environment switches:
  EMBGEMMA_OPENMP=0     build without OpenMP (serial); default: use it when the compiler has it
  OpenMP_ROOT=DIR       macOS: the libomp install to use with Apple clang (default: `brew --prefix libomp`)
  EMBGEMMA_WERROR=1     turn compiler warnings into errors
  EMBGEMMA_CFLAGS="..." extra compiler flags (e.g. sanitizers), EMBGEMMA_LDFLAGS likewise

The kernels for every ISA of the target architecture (x86-64: AVX2, AVX-VNNI, AVX-512; ARM64: NEON,
dot product, I8MM) are compiled in with per-function target attributes and chosen at run time, so no
-march flag is needed or wanted.
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
    "csrc/platform.c",
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
    "csrc/kernels_amx.c",
    "csrc/kernels_neon.c",
    "csrc/kernels_dotprod.c",
    "csrc/kernels_i8mm.c",
    "csrc/testing.c",
]


def _builds_openmp(cc, cflags, ldflags):
    """Compile and link a tiny OpenMP program with these flags; True when the toolchain can."""
    src = "#include <omp.h>\nint main(void){\n#pragma omp parallel\n{}\nreturn omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as d:
        c = os.path.join(d, "t.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(cc + cflags + [c, "-o", os.path.join(d, "t")] + ldflags, capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


def _gcc_for_aarch64(cc):
    """True for GCC targeting AArch64: a file that only compiles there, with a flag only GCC takes (-Werror:
    clang warns that it ignores it)."""
    src = "#ifndef __aarch64__\n#error not AArch64\n#endif\nint eg_probe;\n"
    with tempfile.TemporaryDirectory() as d:
        c = os.path.join(d, "t.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(cc + ["-fno-schedule-insns", "-Werror", "-c", c, "-o", os.path.join(d, "t.o")],
                               capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


def _libomp_roots():
    """macOS: install prefixes of LLVM's OpenMP runtime (OpenMP_ROOT, Homebrew's libomp) that hold omp.h."""
    roots = [os.environ.get("OpenMP_ROOT", "")]
    try:
        r = subprocess.run(["brew", "--prefix", "libomp"], capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            roots.append(r.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    roots += ["/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"]  # Homebrew's prefixes: Apple silicon, Intel
    found = []
    for root in roots:
        if root and root not in found and os.path.isfile(os.path.join(root, "include", "omp.h")):
            found.append(root)
    return found


def _openmp_flags(cc):
    """(compile flags, link flags) that build OpenMP code with this compiler, or None. GCC and LLVM
    clang take -fopenmp; Apple clang has no runtime of its own: it takes -Xpreprocessor -fopenmp and
    LLVM's libomp (-lomp), which Homebrew installs (keg-only, so its prefix is given explicitly)."""
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":
        for root in _libomp_roots():
            lib = os.path.join(root, "lib")
            candidates.append((["-Xpreprocessor", "-fopenmp", "-I" + os.path.join(root, "include")],
                               ["-L" + lib, "-lomp", "-Wl,-rpath," + lib]))
    for cflags, ldflags in candidates:
        if _builds_openmp(cc, cflags, ldflags):
            return cflags, ldflags
    return None


def _serial_message(asked_off):
    if asked_off:
        return "embgemma: building without OpenMP (serial), as EMBGEMMA_OPENMP=0 asks: encoding runs on one thread"
    how = ("Apple clang needs LLVM's OpenMP runtime: `brew install libomp` (or set OpenMP_ROOT to a libomp "
           "install prefix), then reinstall embgemma" if sys.platform == "darwin" else
           "install your compiler's OpenMP support (GCC ships it as libgomp; for clang install libomp-dev), "
           "then reinstall embgemma")
    return ("embgemma: building without OpenMP (serial): the C compiler cannot build OpenMP code, so encoding "
            "runs on one thread whatever `threads` says (embgemma.build_info()['openmp'] is False). To use every "
            "core, " + how)


class BuildExt(build_ext):
    def build_extensions(self):
        # the whole compile command (a CC of "ccache gcc", macOS's -arch flags), so the probe sees what the build will
        cc = list(self.compiler.compiler_so) if hasattr(self.compiler, "compiler_so") else ["cc"]
        want = os.environ.get("EMBGEMMA_OPENMP", "auto")
        omp = _openmp_flags(cc) if want != "0" else None
        if want == "1" and not omp:
            sys.exit("EMBGEMMA_OPENMP=1 but the compiler cannot build OpenMP programs. " + _serial_message(False))
        if not omp:
            print(_serial_message(want == "0"), file=sys.stderr)
        # GCC schedules instructions before register allocation on AArch64 (not on x86-64): it hoists the ARM
        # micro-kernels' loads until their accumulators spill to the stack. Clang has no such pass.
        no_sched = ["-fno-schedule-insns"] if _gcc_for_aarch64(cc) else []
        for ext in self.extensions:
            ext.extra_compile_args = ["-std=c11", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wpointer-arith",
                                      "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                                      "-fno-math-errno"] + no_sched
            ext.extra_link_args = []
            if omp:
                ext.extra_compile_args += omp[0]
                ext.extra_link_args += omp[1]
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
