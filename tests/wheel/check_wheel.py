"""Checks of a built embgemma wheel, used by tests/wheel/run.sh and by cibuildwheel's test command.

  python check_wheel.py WHEEL        its contents: one extension, py.typed and _core.pyi, nothing that
                                     does not belong (tests, sources, build leftovers, virtual
                                     environments), and the wheel and its native code (the extension
                                     plus the libraries auditwheel / delocate vendored) each under 2 MiB
  python check_wheel.py --installed  the embgemma this interpreter imports: from site-packages (not a
                                     checkout on sys.path), built with OpenMP, with every kernel level
                                     of its architecture compiled in (the ISA is chosen at run time)

Standard library only: it runs in any test environment.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import sysconfig
import zipfile

LIMIT = 2 * 1024 * 1024
NATIVE = re.compile(r"\.(so|dylib)(\.[0-9.]+)?$|\.(pyd|dll)$")  # .dll: runtimes delvewheel vendors (vcomp140)
# top-level folders and files a wheel of this project must not carry
FOREIGN = re.compile(r"^(tests|csrc|build|benchmarks|docs|\.?venv[^/]*|[^/]*\.egg-info)/|(^|/)__pycache__/|\.(pyc|o|a|c|h)$")
X86_LEVELS = ["scalar", "avx2", "avxvnni", "avx512", "avx512bf16", "amx"]


def check_wheel(path: str) -> list[str]:
    problems = []
    with zipfile.ZipFile(path) as z:
        files = [i for i in z.infolist() if not i.is_dir()]
    names = [i.filename for i in files]
    native = {i.filename: i.file_size for i in files if NATIVE.search(i.filename)}
    foreign = [n for n in names if FOREIGN.search(n)]
    if foreign:
        problems.append(f"files that do not belong in a wheel: {foreign}")
    cores = [n for n in names if re.fullmatch(r"embgemma/_core\.[^/]+\.(so|pyd)", n)]
    if len(cores) != 1:
        problems.append(f"expected one embgemma/_core extension, found {cores}")
    for need in ("embgemma/py.typed", "embgemma/_core.pyi", "embgemma/__init__.py", "embgemma/__main__.py"):
        if need not in names:
            problems.append(f"{need} missing")
    size, native_size = os.path.getsize(path), sum(native.values())
    for n, s in sorted(native.items()):
        print(f"  {n}: {s / 1e6:.2f} MB")
    print(f"  {os.path.basename(path)}: {size / 1e6:.2f} MB ({size} bytes); native code installed "
          f"{native_size / 1e6:.2f} MB; {len(names)} files; limit {LIMIT} bytes (2 MiB) each")
    if size >= LIMIT:
        problems.append(f"the wheel is {size} bytes, over the {LIMIT}-byte limit")
    if native_size >= LIMIT:
        problems.append(f"the extension and its vendored libraries are {native_size} bytes, over the {LIMIT}-byte limit")
    return problems


def check_installed() -> list[str]:
    import embgemma
    import embgemma._core

    problems = []
    site = os.path.realpath(sysconfig.get_paths()["platlib"])
    for m in (embgemma, embgemma._core):
        f = os.path.realpath(m.__file__)
        if not f.startswith(site + os.sep):
            problems.append(f"{m.__name__} is imported from {f}, not from the installed wheel in {site}")
    info = embgemma.build_info()
    print(f"  embgemma {info['version']} from {os.path.dirname(embgemma.__file__)}: compiled "
          f"{' '.join(info['compiled_isas'])}; chosen here {info['chosen_isa']}; OpenMP {info['openmp']}")
    if not info["openmp"]:
        problems.append("the extension was built without OpenMP (serial)")
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64") and info["compiled_isas"] != X86_LEVELS:
        problems.append(f"an x86-64 wheel must carry every kernel level {X86_LEVELS}, has {info['compiled_isas']}")
    if machine in ("aarch64", "arm64") and info["compiled_isas"] == ["scalar"]:
        problems.append("an ARM64 wheel must carry its NEON kernels, has only the scalar ones")
    return problems


def main(argv: list[str]) -> int:
    if argv == ["--installed"]:
        problems = check_installed()
    elif len(argv) == 1 and argv[0].endswith(".whl"):
        problems = check_wheel(argv[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"wheel check FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
