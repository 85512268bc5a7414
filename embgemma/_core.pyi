from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

class EmbGemmaError(Exception): ...
class ModelFormatError(EmbGemmaError, ValueError): ...
class UnsupportedModelError(EmbGemmaError, ValueError): ...

class Model:
    def __init__(
        self,
        path: str | bytes | PathLike[str],
        isa: str | None = None,
        mlp_weights: str = "float32",
        attn_weights: str = "float32",
        dense_from: str | bytes | PathLike[str] | None = ...,
        no_dense: bool = False,
    ) -> None: ...
    @property
    def info(self) -> dict[str, Any]: ...
    def encode(
        self,
        ids: npt.ArrayLike,
        offsets: npt.ArrayLike,
        *,
        dim: int = 0,
        normalize: bool = True,
        threads: int = 1,
        out: npt.NDArray[np.float32] | None = None,
        rows: npt.ArrayLike | None = None,
    ) -> npt.NDArray[np.float32]: ...

def build_info() -> dict[str, Any]: ...
def fma_peak(threads: int = 0, seconds: float = 0.5) -> float: ...
def _test_gemm(
    isa: str,
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    weights: str = "float32",
) -> None: ...
def gguf_read(path: str | bytes | PathLike[str]) -> dict[str, Any]: ...
def _test_parse(kind: str, data: bytes) -> None: ...
def _test_vec(isa: str, op: int, a: float, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]) -> float: ...
