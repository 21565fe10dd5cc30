"""Does OpenVINO's throughput mode help on 2 cores? (issue #17, throughput with 8 callers)

The same 8 requests (50 pairs each, batches of 32, padded per batch) of a
cross-encoder folder, compiled twice at bf16 precision: the LATENCY hint (1 stream,
2 threads, what ships) fed by 1 or 2 callers, and the THROUGHPUT hint with 2 streams
(1 thread each) fed by 2 callers. Prints the wall time of each, twice.

    python benchmarks/openvino_streams.py FOLDER
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402,F401  (offline environment first)
from backend_probe import INPUTS, batches_of  # noqa: E402
from workload import DEFAULT_DATA, mixed_requests  # noqa: E402


def run_all(compiled, batches: list[dict], callers: int) -> float:
    """Seconds for ``callers`` threads to run every batch, each with its own request."""
    names = [port.get_any_name() for port in compiled.inputs]
    work, lock = list(batches), threading.Lock()

    def loop() -> None:
        request = compiled.create_infer_request()
        while True:
            with lock:
                if not work:
                    return
                batch = work.pop()
            request.infer({name: batch[name] for name in names})

    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def main(folder: str) -> int:
    import openvino as ov
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    requests = mixed_requests(DEFAULT_DATA, ("cranfield", "cisi"), 4)
    batches = [b for r in requests for b in batches_of(tokenizer, r, 32, 512)]
    example = {name: torch.from_numpy(batches[0][name]) for name in INPUTS}
    converted = ov.convert_model(model, example_input=example)
    core = ov.Core()
    latency = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                    "PERFORMANCE_HINT": "LATENCY"})
    throughput = core.compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": "2"})
    hardware = machine.hardware()
    print(f"{hardware['cpu']} | class {hardware['hardware_class']} | "
          f"streams {latency.get_property('NUM_STREAMS')} vs "
          f"{throughput.get_property('NUM_STREAMS')} | {len(batches)} batches, "
          f"{len(requests)} requests")
    run_all(latency, batches, 1)
    run_all(throughput, batches, 2)
    for _ in range(2):
        print(f"latency 1 caller {run_all(latency, batches, 1):.2f}s | "
              f"latency 2 callers {run_all(latency, batches, 2):.2f}s | "
              f"throughput 2 streams 2 callers {run_all(throughput, batches, 2):.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
