"""A long-lived worker process holding one system; the coordinator talks to it over pipes.

Started as ``python -m harness.worker`` with the thread caps in its environment. Frames on
stdin/stdout are 8-byte length + pickle. Library output is sent to stderr (fd 1 is redirected
there once the protocol channel has been taken), so it cannot corrupt the channel.

Requests (dicts with "op"):
  init      {system, paths, threads, options, tokenizer_json}  -> load timings, RSS, info
  workloads {workloads: {name: [texts]}}                       -> ok
  run       {workload, batch_size, return_emb}                 -> seconds, emb?
  latency   {workload, calls}                                  -> per-call seconds, emb of call 0
  check_tokenizer {workloads: [names]}                         -> (llama.cpp only) agreement
  status                                                       -> RSS, peak RSS
  fma_peak  {threads, seconds}                                 -> GFLOP/s or None
  exit
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import time
import traceback


def _recv(f):
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(f.read(n))


def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def main() -> None:
    t_start = time.perf_counter()
    chan_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    chan_in = sys.stdin.buffer

    from . import systems

    system = None
    workloads: dict[str, list[str]] = {}
    while True:
        msg = _recv(chan_in)
        if msg is None or msg.get("op") == "exit":
            break
        op = msg["op"]
        try:
            if op == "init":
                cls = systems.BY_NAME[msg["system"]]
                system = cls(msg["paths"], msg["threads"], msg.get("options"))
                t0 = time.perf_counter()
                system.import_libs()
                t1 = time.perf_counter()
                system.construct()
                t2 = time.perf_counter()
                st = systems.proc_status()
                reply = {"ok": True, "import_s": t1 - t0, "construct_s": t2 - t1,
                         "process_to_ready_s": t2 - t_start, "rss_after_load_mb": st["rss_mb"],
                         "peak_rss_after_load_mb": st["peak_rss_mb"], "info": system.info()}
            elif op == "workloads":
                workloads.update(msg["workloads"])
                reply = {"ok": True}
            elif op == "run":
                texts = workloads[msg["workload"]]
                t0 = time.perf_counter()
                emb = system.encode(texts, msg["batch_size"])
                dt = time.perf_counter() - t0
                if emb.shape != (len(texts), 768):
                    raise RuntimeError(f"unexpected output shape {emb.shape}")
                reply = {"ok": True, "seconds": dt, "emb": emb if msg.get("return_emb") else None}
            elif op == "latency":
                text = workloads[msg["workload"]]
                lat = []
                first = None
                for i in range(msg["calls"]):
                    t0 = time.perf_counter()
                    e = system.encode(text, 1)
                    lat.append(time.perf_counter() - t0)
                    if i == 0:
                        first = e
                reply = {"ok": True, "latencies": lat, "emb": first}
            elif op == "check_tokenizer":
                texts = [s for name in msg["workloads"] for s in workloads[name]]
                fn = getattr(system, "check_tokenizer", None)
                reply = {"ok": True, "result": fn(texts, msg["tokenizer_json"]) if fn else None,
                         "info": system.info()}
            elif op == "status":
                reply = {"ok": True, **systems.proc_status(), "info": system.info() if system else None}
            elif op == "fma_peak":
                g = None
                try:
                    from embgemma import _core

                    if hasattr(_core, "fma_peak"):
                        g = float(_core.fma_peak(msg["threads"], msg.get("seconds", 1.0)))
                except Exception:  # noqa: BLE001
                    g = None
                reply = {"ok": True, "gflops": g}
            else:
                reply = {"ok": False, "error": f"unknown op {op}"}
        except BaseException as e:  # noqa: BLE001
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        _send(chan_out, reply)


if __name__ == "__main__":
    main()
