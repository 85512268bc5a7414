"""Search over embeddings with sentence-transformers' semantics: ``semantic_search`` gives the same
hits as ``sentence_transformers.util.semantic_search`` (6.x; equal scores in the same order), but in
NumPy, scoring a bounded block at a time and keeping only a running top-k, so memory does not grow
with the corpus.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import islice
from operator import itemgetter
from typing import Any

import numpy as np


def _as_2d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {a.shape}")
    return a


def semantic_search(
    query_embeddings: np.ndarray,
    corpus_embeddings: np.ndarray,
    query_chunk_size: int = 100,
    corpus_chunk_size: int = 500_000,
    top_k: int = 10,
    score_function: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[list[dict[str, int | float]]]:
    """For each query, the ``top_k`` corpus entries by ``score_function`` (default cosine similarity),
    best first, as ``[{"corpus_id": int, "score": float}, ...]`` (sentence-transformers' format).

    The hits are those of sentence-transformers 6's ``util.semantic_search`` for the same scores,
    equal scores included: the chunk sizes mean what they mean there (the defaults are its own), and
    equal scores come out in the order its torch.topk-and-heap merge leaves them in. Scores are
    computed a block of at most ~4M at a time (16 MB in float32) and only a running top-k is kept,
    so memory does not grow with the corpus. ``score_function(a, b)`` must score every row of ``a``
    against every row of ``b`` (it is called on parts of a corpus chunk). The default is cosine
    similarity, in float64 when an input is float64, else float32 (as ``cos_sim``).
    """
    q = _as_2d(query_embeddings, "query_embeddings")
    c = _as_2d(corpus_embeddings, "corpus_embeddings")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"query width {q.shape[1]} differs from corpus width {c.shape[1]}")
    for name, v in (("query_chunk_size", query_chunk_size), ("corpus_chunk_size", corpus_chunk_size), ("top_k", top_k)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    k = int(top_k)
    heaps: list[list[tuple[float, int]]] = [[] for _ in range(len(q))]
    if len(c) == 0:
        return [[] for _ in heaps]
    blocks = _Blocks(q, c, int(query_chunk_size), int(corpus_chunk_size), score_function)
    chunks = list(blocks.chunks())
    for c0, n in chunks:
        kk = min(k, n)
        if 64 * kk <= n:  # torch.topk runs std::partial_sort, which streams: fed a block at a time
            sorts = {q0: _PartialSorts(len(blocks.q[q0 : q0 + blocks.qcs]), kk) for q0 in blocks.query_starts}
            for q0, _, s in blocks.scores(c0, n, blocks.query_starts):
                sorts[q0].feed(s)
            tops = {q0: p.result() for q0, p in sorts.items()}
        else:  # std::nth_element needs the whole row of the chunk (n < 64 k)
            tops = {q0: _chunk_topk(np.concatenate([s for _, _, s in blocks.scores(c0, n, [q0])], axis=1), kk,
                                    only_set=len(chunks) == 1)
                    for q0 in blocks.query_starts}
        for q0, rows in tops.items():
            for heap, top in zip(heaps[q0:], rows):
                # sentence-transformers' merge: a heap of the k largest (score, corpus_id) pairs
                candidates = iter([(v, c0 + j) for v, j in top])
                for cand in islice(candidates, k - len(heap)):
                    heapq.heappush(heap, cand)
                for cand in candidates:
                    heapq.heappushpop(heap, cand)
    # its final sort is stable: equal scores stay in heap order
    return [[{"corpus_id": i, "score": v} for v, i in sorted(h, key=itemgetter(0), reverse=True)] for h in heaps]


# How sentence-transformers orders equal scores. For each (query chunk x corpus chunk) it takes
# torch.topk(scores, k, sorted=False) and pushes the (score, corpus_id) pairs, in the order topk gives
# them, through a heapq of k pairs per query; the hits are that heap sorted by score with Python's
# stable sort. So equal scores come out in the heap's order, which follows topk's order, and which of
# several tied candidates a chunk offers is topk's choice. On the CPU, topk runs libstdc++'s
# std::partial_sort over (value, index) pairs when 64 * k <= n, else std::nth_element, comparing
# values only (NaN above all). Below, both step for step (tested equal to torch.topk), vectorized
# where the result allows: partial_sort's heap only takes values above its top, found with NumPy;
# nth_element's partitions are computed with NumPy.

_BLOCK_SCORES = 1 << 22  # scores computed at once: 16 MB in float32
_SMALL = 256  # nth_element: ranges up to this size go faster on Python lists than with NumPy


def _unit_rows(x: np.ndarray, dtype: type) -> np.ndarray:
    """x / max(|x|, 1e-12) per row, as sentence-transformers' cos_sim and embgemma.cos_sim normalize."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _Blocks:
    """Score matrices grouped as sentence-transformers groups them (a query chunk against a corpus
    chunk), each corpus chunk cut into blocks of at most _BLOCK_SCORES scores per query chunk."""

    def __init__(self, q: np.ndarray, c: np.ndarray, qcs: int, ccs: int, score_function: Callable | None) -> None:
        self.c, self.qcs, self.ccs = c, qcs, ccs
        self.query_starts = list(range(0, len(q), qcs))
        self.width = max(1, _BLOCK_SCORES // min(qcs, len(q)))
        if score_function is None:  # cosine: queries normalized once, each corpus block once
            self.dtype = np.float64 if np.float64 in (q.dtype, c.dtype) else np.float32
            self.q, self.score = _unit_rows(q, self.dtype), None
        else:
            self.q, self.score = q, score_function

    def chunks(self):
        for c0 in range(0, len(self.c), self.ccs):
            yield c0, min(self.ccs, len(self.c) - c0)

    def scores(self, c0: int, n: int, query_starts: list[int]):
        """(query chunk start, offset in the corpus chunk, scores) over the corpus chunk c0 .. c0 + n."""
        for b0 in range(c0, c0 + n, self.width):
            b1 = min(b0 + self.width, c0 + n)
            cb = self.c[b0:b1] if self.score is not None else _unit_rows(self.c[b0:b1], self.dtype)
            for q0 in query_starts:
                qc = self.q[q0 : q0 + self.qcs]
                s = qc @ cb.T if self.score is None else np.asarray(self.score(qc, cb))
                if s.shape != (len(qc), b1 - b0):
                    raise ValueError(f"score_function returned shape {s.shape} for {len(qc)} queries and {b1 - b0} "
                                     "corpus rows; it must return a (queries, corpus rows) matrix")
                yield q0, b0 - c0, (s if s.dtype.kind == "f" else s.astype(np.float64))


def _chunk_topk(s: np.ndarray, k: int, only_set: bool) -> list[list[tuple[float, int]]]:
    """torch.topk(s, k, sorted=False) per row (the nth_element case), as (value, index) lists.

    ``only_set``: the chunk is the only one, so when its top k + 1 values are distinct numbers the
    order of the k does not change the hits; those rows get them sorted, without the emulation."""
    n = s.shape[1]
    exact = np.ones(len(s), dtype=bool)
    if only_set:
        keep = min(k + 1, n)
        part = np.argpartition(-s, keep - 1, axis=1)[:, :keep] if n > keep else np.broadcast_to(np.arange(n), s.shape)
        vals = np.take_along_axis(s, part, 1)
        order = np.argsort(-vals, axis=1, kind="stable")
        vals, ids = np.take_along_axis(vals, order, 1), np.take_along_axis(part, order, 1)
        exact = np.isnan(s).any(axis=1) | (vals[:, 1:] == vals[:, :-1]).any(axis=1)
        fast = zip(vals[:, :k].tolist(), ids[:, :k].tolist())
    out = []
    for r in range(len(s)):
        if exact[r]:
            out.append(list(zip(*_torch_topk(s[r], k))))
            if only_set:
                next(fast)
        else:
            out.append(list(zip(*next(fast))))
    return out


def _torch_topk(row: np.ndarray, k: int) -> tuple[list[float], list[int]]:
    """Values and indices of ``torch.topk(row, k, largest=True, sorted=False)`` on the CPU, in its order."""
    n = len(row)
    if 64 * k <= n:
        p = _PartialSorts(1, k)
        p.feed(row[None, :])
        top = p.result()[0]
        return [v for v, _ in top], [i for _, i in top]
    # nth_element only compares: on dense ranks (equal values equal, NaN above all, as torch compares)
    ranks = np.unique(row, return_inverse=True)[1].reshape(-1)
    ids = _nth_element(ranks, np.arange(n), k - 1)
    return row[ids].tolist(), ids


def _gt(x: float, y: float) -> bool:
    """topk's order (largest first): x before y when x > y; NaN before any number."""
    return (x != x and y == y) or x > y


def _gt_array(a: np.ndarray, b: Any) -> np.ndarray:
    return (np.isnan(a) & ~np.isnan(b)) | (a > b)


def _adjust_heap(h: list, hole: int, length: int, item: tuple) -> None:
    """libstdc++'s __adjust_heap (then __push_heap) on h[0:length], (value, index) pairs by _gt."""
    top = child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _gt(h[child][0], h[child - 1][0]):
            child -= 1
        h[hole] = h[child]
        hole = child
    if length & 1 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        h[hole] = h[child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and _gt(h[parent][0], item[0]):
        h[hole] = h[parent]
        hole = parent
        parent = (hole - 1) // 2
    h[hole] = item


def _make_heap(h: list) -> None:
    for parent in range((len(h) - 2) // 2, -1, -1):
        _adjust_heap(h, parent, len(h), h[parent])


def _sort_heap(h: list) -> list:
    for last in range(len(h) - 1, 0, -1):
        item, h[last] = h[last], h[0]
        _adjust_heap(h, 0, last, item)
    return h


class _PartialSorts:
    """std::partial_sort(first, first + k, last) on (value, index) pairs for many rows, fed the same
    columns in pieces: __heap_select (a heap of the first k; a later pair replaces the top only if it
    comes before it), then __sort_heap. The top only moves forward, so the values that can enter are
    found with NumPy, over growing steps."""

    def __init__(self, rows: int, k: int) -> None:
        self.k, self.heaps, self.seen = k, [[] for _ in range(rows)], 0

    def feed(self, s: np.ndarray) -> None:
        k, heaps, i, width = self.k, self.heaps, 0, s.shape[1]
        if self.seen < k:  # the first k fill the heaps
            i = min(k - self.seen, width)
            for h, row in zip(heaps, s[:, :i].tolist()):
                h += zip(row, range(self.seen, self.seen + i))
            if self.seen + i == k:
                for h in heaps:
                    _make_heap(h)
        if i < width:
            top = np.array([h[0][0] for h in heaps])
            step = max(k, 16)
            while i < width:
                part = s[:, i : i + step]
                rows, cols = np.nonzero(_gt_array(part, top[:, None]))
                for r, j, v in zip(rows.tolist(), cols.tolist(), part[rows, cols].tolist()):
                    h = heaps[r]
                    if _gt(v, h[0][0]):
                        _adjust_heap(h, 0, k, (v, self.seen + i + j))
                for r in set(rows.tolist()):
                    top[r] = heaps[r][0][0]
                i += part.shape[1]
                step = min(2 * step, 1 << 20)
        self.seen += width

    def result(self) -> list[list[tuple[float, int]]]:
        return [_sort_heap(h) for h in self.heaps]


def _nth_element(v: np.ndarray, ids: np.ndarray, nth: int) -> list[int]:
    """std::nth_element(v, v + nth, v + len(v)) with comp = greater, as libstdc++'s __introselect
    runs it, on integer ranks, moving ids along; partitions of more than _SMALL values with NumPy,
    the rest on Python lists. Returns the ids then in the first nth + 1 places."""
    first, last = 0, len(v)
    depth = 2 * ((last - first).bit_length() - 1)
    while last - first > max(_SMALL, 3):
        if depth == 0:  # __heap_select of [first, nth + 1), then the nth element to the front
            p = _PartialSorts(1, nth + 1 - first)
            p.feed(v[None, first:last])
            h = p.heaps[0]
            h[0], h[nth - first] = h[nth - first], h[0]
            return ids[:first].tolist() + ids[first:last][[j for _, j in h]].tolist()
        depth -= 1
        _median_to_first(v, ids, first, first + 1, first + (last - first) // 2, last - 1)
        cut = _partition(v, ids, first + 1, last, first)
        if cut <= nth:
            first = cut
        else:
            last = cut
    seg = list(zip(v[first:last].tolist(), ids[first:last].tolist()))
    _nth_element_list(seg, nth - first, depth)
    return ids[:first].tolist() + [j for _, j in seg[: nth + 1 - first]]


def _nth_element_list(a: list, nth: int, depth: int) -> None:
    """__introselect on a list of (rank, index) pairs, as libstdc++ writes it."""
    first, last = 0, len(a)
    while last - first > 3:
        if depth == 0:
            h = a[first : nth + 1]
            _make_heap(h)
            for x in a[nth + 1 : last]:
                if x[0] > h[0][0]:
                    _adjust_heap(h, 0, len(h), x)
            h[0], h[nth - first] = h[nth - first], h[0]
            a[first : nth + 1] = h
            return
        depth -= 1
        mid = first + (last - first) // 2
        x, y, z = a[first + 1][0], a[mid][0], a[last - 1][0]  # __move_median_to_first
        if x > y:
            m = mid if y > z else (last - 1 if x > z else first + 1)
        elif x > z:
            m = first + 1
        elif y > z:
            m = last - 1
        else:
            m = mid
        a[first], a[m] = a[m], a[first]
        pv, lo, hi = a[first][0], first + 1, last  # __unguarded_partition
        while True:
            while a[lo][0] > pv:
                lo += 1
            hi -= 1
            while pv > a[hi][0]:
                hi -= 1
            if not lo < hi:
                break
            a[lo], a[hi] = a[hi], a[lo]
            lo += 1
        if lo <= nth:
            first = lo
        else:
            last = lo
    for i in range(first + 1, last):  # __insertion_sort
        x = a[i]
        if x[0] > a[first][0]:
            a[first + 1 : i + 1] = a[first:i]
            a[first] = x
        else:
            j = i
            while x[0] > a[j - 1][0]:
                a[j] = a[j - 1]
                j -= 1
            a[j] = x


def _median_to_first(v: np.ndarray, ids: np.ndarray, result: int, a: int, b: int, c: int) -> None:
    """libstdc++'s __move_median_to_first."""
    x, y, z = int(v[a]), int(v[b]), int(v[c])
    if x > y:
        m = b if y > z else (c if x > z else a)
    elif x > z:
        m = a
    elif y > z:
        m = c
    else:
        m = b
    v[result], v[m] = v[m], v[result]
    ids[result], ids[m] = ids[m], ids[result]


def _partition(v: np.ndarray, ids: np.ndarray, lo: int, hi: int, pivot: int) -> int:
    """libstdc++'s __unguarded_partition(lo, hi, pivot) with NumPy: the forward scan stops on values
    that do not come before the pivot, the backward scan on values the pivot does not come before;
    the i-th stops of the two scans are swapped until they cross (in the last round the values just
    swapped stop the scans first, hence the min)."""
    pv = v[pivot]
    seg = v[lo:hi]
    left = lo + np.flatnonzero(seg <= pv)
    right = np.append(lo + np.flatnonzero(seg >= pv)[::-1], pivot)  # the pivot stops it at the latest
    t = min(len(left), len(right))
    crossed = np.flatnonzero(left[:t] >= right[:t])
    m = int(crossed[0]) if len(crossed) else t
    i, j = left[:m], right[:m]
    v[i], v[j] = v[j], v[i]
    ids[i], ids[j] = ids[j], ids[i]
    cut = int(left[m]) if m < len(left) else hi
    return min(cut, int(right[m - 1])) if m else cut
