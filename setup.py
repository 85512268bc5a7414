"""Build of the C extension embgemma._core (metadata lives in pyproject.toml).

Environment switches:
  EMBGEMMA_OPENMP=0     build without OpenMP (serial); default: use it when the compiler has it
  OpenMP_ROOT=DIR       macOS: the libomp install to use with Apple clang (default: `brew --prefix libomp`)
  EMBGEMMA_WERROR=1     turn compiler warnings into errors
  EMBGEMMA_CFLAGS="..." extra compiler flags (e.g. sanitizers), EMBGEMMA_LDFLAGS likewise

The kernels for every ISA of the target architecture (x86-64: AVX2, AVX-VNNI, AVX-512; ARM64: NEON,
dot product, I8MM) are compiled in with per-function target attributes and chosen at run time, so no
-march flag is needed or wanted.

Windows (win_amd64) builds with MSVC, the compiler pip uses there. MSVC has no target attributes, so
each x86-64 kernel file is compiled with its own /arch flag (MSVC_ARCH; csrc/platform.h's
EG_ISA_PER_FILE), every level included, and OpenMP is MSVC's /openmp, whose runtime (vcomp140.dll)
lives beside PyTorch's Intel OpenMP in one process, where LLVM's libomp refuses to start ("OMP: Error
#15"). This path is compiled and run here only as tests/c/win64.sh's MinGW-GCC imitation of it.
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

# MSVC: the /arch flag of each x86-64 kernel file (all others get the x86-64 baseline). /arch:AVX512 is
# F+CD+BW+DQ+VL; MSVC compiles the VNNI, BF16 and AMX intrinsics under it (and AVX-VNNI's under AVX2)
# without a flag of their own, and dispatch.c runs nothing the CPU lacks.
MSVC_ARCH = {
    "csrc/kernels_avx2.c": "/arch:AVX2",
    "csrc/kernels_avxvnni.c": "/arch:AVX2",
    "csrc/kernels_avx512.c": "/arch:AVX512",
    "csrc/kernels_amx.c": "/arch:AVX512",
}


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
        if self.compiler.compiler_type == "msvc":
            return self._build_msvc()
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
            if self.compiler.compiler_type == "mingw32":  # C99 printf for the messages' %zu, %lld
                ext.define_macros.append(("__USE_MINGW_ANSI_STDIO", "1"))
            ext.extra_compile_args += shlex.split(os.environ.get("EMBGEMMA_CFLAGS", ""))
            ext.extra_link_args += shlex.split(os.environ.get("EMBGEMMA_LDFLAGS", ""))
        super().build_extensions()

    def _build_msvc(self):
        """Windows: the kernel files compiled first, each with its /arch, then the rest as usual."""
        try:
            from setuptools.errors import CompileError
        except ImportError:  # setuptools before 59
            from distutils.errors import CompileError

        if not self.compiler.initialized:
            self.compiler.initialize()
        # no whole-program optimization (/GL): it could inline an /arch:AVX512 function into baseline code
        self.compiler.compile_options = [o for o in self.compiler.compile_options if o != "/GL"]
        if os.environ.get("EMBGEMMA_OPENMP") == "0":
            print(_serial_message(True), file=sys.stderr)
            omp = []
        else:
            omp = ["/openmp"]  # MSVC's OpenMP 2.0 runtime, vcomp140.dll: what every pragma here needs
        flags = ["/std:c11", "/O2", "/W3"] + omp + (["/WX"] if os.environ.get("EMBGEMMA_WERROR") == "1" else [])
        flags += shlex.split(os.environ.get("EMBGEMMA_CFLAGS", ""))
        for ext in self.extensions:
            ext.define_macros += [("_CRT_SECURE_NO_WARNINGS", "1"), ("_CRT_NONSTDC_NO_DEPRECATE", "1")]
            ext.extra_link_args = shlex.split(os.environ.get("EMBGEMMA_LDFLAGS", ""))
            for src, arch in MSVC_ARCH.items():
                ext.sources.remove(src)
                try:
                    ext.extra_objects = list(ext.extra_objects or []) + self.compiler.compile(
                        [src], output_dir=self.build_temp, macros=ext.define_macros,
                        include_dirs=ext.include_dirs, extra_postargs=flags + [arch])
                except CompileError:
                    sys.exit(f"embgemma: MSVC cannot compile {src} with {arch} (errors above). Its kernels need "
                             f"the AVX2 / AVX-512 / AMX intrinsics of Visual Studio 2022's MSVC (or newer), and C11 "
                             f"(/std:c11, Visual Studio 2019 16.8 or newer): update Visual Studio's C++ build tools.")
            ext.extra_compile_args = flags
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
