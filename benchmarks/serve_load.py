"""Load test of the HTTP service against two baselines, on real dev sentences, loopback only.

  .venv/bin/python benchmarks/serve_load.py --model_dir /work/serve_model/joint \
      --hf_dir /work/serve_model/joint_hf --raw_dir ../shared/data/raw --dataset resume

Three servers on 127.0.0.1, each loaded with the same weights, run one after the other:
* `ours`: `python -m punified_jax serve` (cross-request dynamic batching, --batch_size rows);
* `ours_unbatched`: the same command with --batch_size 1 (the Extractor per request, no
  cross-request batching);
* `hf_one_at_a_time`: this script's `hf_server` mode under the torch venv: a single-threaded
  HTTP server answering one request at a time with HF `generate` (what the paper's demo does);
  it returns the generated target string (no offsets: less work than ours).
Closed-loop clients (1, 8, 32, 128 threads with keep-alive connections) each send one sentence
per request (the dataset's types as the prompt) for --seconds per level (bounded: at most
--max_requests per level; outstanding requests are then awaited). Then an overload run at
--overload_factor x the measured throughput of `ours` at 32 clients: open-loop arrivals for
--seconds, counting 200 / 429 / other statuses and lost requests (no answer).

Output: a table and benchmarks/results/serve_load.json (machine, command, per-level
throughput and latency percentiles, ratios against the baselines at the same client count).
The `hf_server` mode imports only the standard library, torch and transformers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------
# The HF one-at-a-time server (runs under .venv-torch).
# ------------------------------------------------------------------------------------------


def hf_server(args: argparse.Namespace) -> int:
  import http.server  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast, T5ForConditionalGeneration  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  model = T5ForConditionalGeneration.from_pretrained(args.hf_dir).eval()
  tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.hf_dir, "tokenizer.json"))
  eos = model.config.eos_token_id

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
      pass

    def do_GET(self):  # pylint: disable=invalid-name
      self._send(200, {"ready": True})

    def do_POST(self):  # pylint: disable=invalid-name
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      prompt = "".join("<entity>" + t for t in body["types"]) + "<text>" + body["text"]
      ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:args.max_input_length - 1]
      inputs = torch.tensor([ids + [eos]])
      with torch.no_grad():
        output = model.generate(inputs, num_beams=args.beam_size, max_new_tokens=args.max_decode_length,
                                do_sample=False)
      self._send(200, {"generation": tokenizer.decode(output[0], skip_special_tokens=True)})

    def _send(self, status, payload):
      data = json.dumps(payload, ensure_ascii=False).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

  server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)  # one request at a time
  server.serve_forever()
  return 0


# ------------------------------------------------------------------------------------------
# Clients.
# ------------------------------------------------------------------------------------------


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> int:
  connection.request("POST", path, body, {"Content-Type": "application/json"})
  response = connection.getresponse()
  response.read()
  return response.status


def closed_loop(port: int, path: str, bodies: list[bytes], clients: int, seconds: float,
                max_requests: int, timeout: float) -> dict:
  """`clients` threads, each sending its next request when the previous one is answered."""
  latencies, statuses, lock = [], {}, threading.Lock()
  counter = iter(range(max_requests))
  stop_at = time.monotonic() + seconds
  errors = []

  def client():
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    while time.monotonic() < stop_at:
      with lock:
        index = next(counter, None)
      if index is None:
        return
      started = time.monotonic()
      try:
        status = _post(connection, path, bodies[index % len(bodies)])
      except (OSError, http.client.HTTPException) as error:
        with lock:
          errors.append(repr(error))
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        continue
      with lock:
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
          latencies.append(time.monotonic() - started)

  started = time.monotonic()
  threads = [threading.Thread(target=client) for _ in range(clients)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  elapsed = time.monotonic() - started
  return summarize(latencies, statuses, elapsed, errors) | {"clients": clients}


def open_loop(port: int, path: str, bodies: list[bytes], rate: float, seconds: float,
              timeout: float) -> dict:
  """Arrivals at `rate` per second whatever the answers (overload), each on its own
  connection from a pool of sender threads; counts every request's outcome."""
  total = int(rate * seconds)
  jobs: queue.Queue = queue.Queue()
  latencies, statuses, errors, lock = [], {}, [], threading.Lock()

  def sender():
    while True:
      item = jobs.get()
      if item is None:
        return
      index, due = item
      delay = due - time.monotonic()
      if delay > 0:
        time.sleep(delay)
      started = time.monotonic()
      connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
      try:
        status = _post(connection, path, bodies[index % len(bodies)])
      except (OSError, http.client.HTTPException) as error:
        with lock:
          errors.append(repr(error))
        continue
      finally:
        connection.close()
      with lock:
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
          latencies.append(time.monotonic() - started)

  start = time.monotonic() + 0.5
  for index in range(total):
    jobs.put((index, start + index / rate))
  workers = [threading.Thread(target=sender) for _ in range(min(256, total))]
  for worker in workers:
    jobs.put(None)
    worker.start()
  for worker in workers:
    worker.join()
  elapsed = time.monotonic() - start
  result = summarize(latencies, statuses, elapsed, errors)
  result.update({"offered_rate": rate, "sent": total,
                 "answered": sum(statuses.values()), "lost": total - sum(statuses.values())})
  return result


def summarize(latencies: list[float], statuses: dict, elapsed: float, errors: list) -> dict:
  ordered = sorted(latencies)

  def percentile(p):
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else None

  p50, p99 = percentile(50), percentile(99)
  return {"ok": len(ordered), "seconds": elapsed, "sentences_per_second": len(ordered) / elapsed,
          "p50_s": p50, "p90_s": percentile(90), "p99_s": p99,
          "p99_over_p50": (p99 / p50) if p50 else None,
          "statuses": {str(k): v for k, v in sorted(statuses.items())},
          "transport_errors": len(errors), "error_examples": errors[:3]}


# ------------------------------------------------------------------------------------------
# Servers.
# ------------------------------------------------------------------------------------------


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def wait_ready(process: subprocess.Popen, port: int, path: str, log: str,
               timeout: float = 900) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"server exited with {process.returncode}; see {log}")
    try:
      connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
      connection.request("GET", path)
      if connection.getresponse().status == 200:
        return
    except OSError:
      pass
    time.sleep(1)
  raise RuntimeError(f"server not ready after {timeout} s; see {log}")


def start(command: list[str], port: int, ready_path: str, log: str) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  with open(log, "w") as handle:
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=handle,
                               stderr=subprocess.STDOUT)
  wait_ready(process, port, ready_path, log)
  return process


def stop(process: subprocess.Popen) -> None:
  process.terminate()
  try:
    process.wait(120)
  except subprocess.TimeoutExpired:
    process.kill()


# ------------------------------------------------------------------------------------------
# Driver.
# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("mode", nargs="?", default="run", choices=("run", "hf_server"))
  parser.add_argument("--model_dir")
  parser.add_argument("--hf_dir")
  parser.add_argument("--raw_dir")
  parser.add_argument("--dataset", default="resume")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--sentences", type=int, default=200)
  parser.add_argument("--clients", default="1,8,32,128")
  parser.add_argument("--seconds", type=float, default=20.0, help="per level")
  parser.add_argument("--max_requests", type=int, default=2000, help="per level")
  parser.add_argument("--hf_clients", default="1,8,32", help="levels run on the HF server")
  parser.add_argument("--beam_size", type=int, default=4)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--max_wait_ms", type=float, default=5.0)
  parser.add_argument("--overload_factor", type=float, default=2.0)
  parser.add_argument("--overload_queue_windows", type=int, default=64)
  parser.add_argument("--overload_timeout", type=float, default=10.0)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--max_input_length", type=int, default=256)
  parser.add_argument("--max_decode_length", type=int, default=256)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--torch_python", default=os.environ.get(
      "PUNIFIED_TORCH_PYTHON", os.path.join(REPO_ROOT, ".venv-torch", "bin", "python")))
  parser.add_argument("--log_dir", default="/tmp/serve_load_logs")
  args = parser.parse_args(argv)
  if args.mode == "hf_server":
    return hf_server(args)

  sys.path.insert(0, REPO_ROOT)
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from punified_jax import entity_types  # pylint: disable=g-import-not-at-top
  config = common.configure_tasks(args.raw_dir, [args.dataset])
  import tasks  # pylint: disable=g-import-not-at-top
  examples = tasks.load_examples(config, args.dataset)[args.split][:args.sentences]
  types = list(entity_types.prompt_names(args.dataset))
  ours_bodies = [json.dumps({"text": ex.text, "types": types}, ensure_ascii=False).encode()
                 for ex in examples]
  hf_bodies = [json.dumps({"text": ex.text, "types": types}, ensure_ascii=False).encode()
               for ex in examples]
  os.makedirs(args.log_dir, exist_ok=True)
  levels = [int(c) for c in args.clients.split(",")]
  hf_levels = [int(c) for c in args.hf_clients.split(",")]
  serve = [sys.executable, "-m", "punified_jax", "serve", "--model_dir", args.model_dir,
           "--beam_size", str(args.beam_size), "--log_level", "warning",
           "--max_wait_ms", str(args.max_wait_ms), "--request_timeout", "600",
           "--max_queue_windows", "4096"]
  results: dict = {"machine": common.machine_info(), "command": common.command_line(),
                   "dataset": args.dataset, "split": args.split, "sentences": len(examples),
                   "types": types, "beam_size": args.beam_size, "batch_size": args.batch_size,
                   "seconds_per_level": args.seconds, "servers": {}}
  rows = []

  def run_levels(name, port, path, bodies, client_levels):
    results["servers"][name] = {}
    for clients in client_levels:
      outcome = closed_loop(port, path, bodies, clients, args.seconds, args.max_requests,
                            timeout=900)
      results["servers"][name][str(clients)] = outcome
      rows.append({"server": name, **outcome})
      print(f"{name} @ {clients} clients: {outcome['sentences_per_second']:.2f} sent/s, "
            f"p50 {outcome['p50_s']}, p99 {outcome['p99_s']}, statuses {outcome['statuses']}",
            flush=True)

  # 1. Ours with dynamic batching, then the overload run against a small queue.
  port = args.port or free_port()
  process = start(serve + ["--port", str(port), "--batch_size", str(args.batch_size)], port,
                  "/ready", os.path.join(args.log_dir, "ours.log"))
  try:
    run_levels("ours", port, "/v1/extract", ours_bodies, levels)
  finally:
    stop(process)
  capacity = results["servers"]["ours"].get("32", {}).get("sentences_per_second") or 1.0
  port = free_port()
  process = start(serve + ["--port", str(port), "--batch_size", str(args.batch_size),
                           "--max_queue_windows", str(args.overload_queue_windows),
                           "--request_timeout", str(args.overload_timeout)], port, "/ready",
                  os.path.join(args.log_dir, "ours_overload.log"))
  try:
    overload = open_loop(port, "/v1/extract", ours_bodies, args.overload_factor * capacity,
                         args.seconds, timeout=120)
  finally:
    stop(process)
  results["overload"] = overload
  print(f"overload at {overload['offered_rate']:.1f}/s: {overload['statuses']}, lost "
        f"{overload['lost']}, admitted p99 {overload['p99_s']}", flush=True)

  # 2. Ours without cross-request batching.
  port = free_port()
  process = start(serve + ["--port", str(port), "--batch_size", "1"], port, "/ready",
                  os.path.join(args.log_dir, "ours_unbatched.log"))
  try:
    run_levels("ours_unbatched", port, "/v1/extract", ours_bodies, hf_levels)
  finally:
    stop(process)

  # 3. HF generate, one request at a time.
  port = free_port()
  process = start([args.torch_python, os.path.abspath(__file__), "hf_server", "--hf_dir",
                   args.hf_dir, "--port", str(port), "--beam_size", str(args.beam_size),
                   "--threads", str(args.threads), "--max_input_length",
                   str(args.max_input_length), "--max_decode_length",
                   str(args.max_decode_length)], port, "/", os.path.join(args.log_dir, "hf.log"))
  try:
    run_levels("hf_one_at_a_time", port, "/", hf_bodies, hf_levels)
  finally:
    stop(process)

  ratios = {}
  for clients in hf_levels:
    ours = results["servers"]["ours"].get(str(clients), {}).get("sentences_per_second")
    for baseline in ("hf_one_at_a_time", "ours_unbatched"):
      other = results["servers"][baseline].get(str(clients), {}).get("sentences_per_second")
      if ours and other:
        ratios[f"ours_over_{baseline}@{clients}"] = ours / other
  results["ratios"] = ratios
  common.print_table(rows, ["server", "clients", "ok", "sentences_per_second", "p50_s", "p90_s",
                            "p99_s", "p99_over_p50", "statuses"], "serving load")
  print(json.dumps(ratios, indent=1))
  path = common.write_json("serve_load", results)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
