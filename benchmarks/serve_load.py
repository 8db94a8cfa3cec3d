"""Load test of the HTTP service against two baselines, on real dev sentences, loopback only.

  .venv/bin/python benchmarks/serve_load.py --model_dir /work/bench_model/joint1000 \
      --hf_dir /work/bench_model/joint1000_hf --raw_dir ../shared/data/raw --dataset resume

Three servers on 127.0.0.1, each loaded with the same weights, run one after the other:
* `ours`: `python -m punified_jax serve --batch_size 16` (cross-request dynamic batching in
  compiled batch sizes 1, 4 and 16, chosen per batch by the queued windows);
* `ours_1worker` (optional): the same as `ours` with --decode_workers 1 (one decoding thread:
  the A/B of serve's concurrent decode workers, whose default is one per core, at most 4);
* `ours_batch1`: the same command with --batch_sizes 1 (each window decoded alone: our
  Extractor per request, no cross-request batching);
* `hf_one_at_a_time`: this script's `hf_server` mode under the torch venv: a single-threaded
  HTTP server answering one request at a time with HF `generate` (what the paper's demo does);
  it returns the generated target string (no parsing or offsets: less work than ours).
  Fairness: it generates once before it reports ready (no first-call cost in the timings), uses
  --hf_threads torch threads (1 by default: on this shared 2-core machine 2 OpenMP threads made
  one generate take 26 s instead of 0.17 s), and its max_new_tokens follows OUR output-limit
  rule (--output_limit_factor x the input's length bucket, capped at --max_decode_length).
Closed-loop clients (1, 8, 32, 128 threads with keep-alive connections) each send one sentence
per request (the dataset's types as the prompt) for --seconds per level (bounded: at most
--max_requests per level; outstanding requests are then awaited and counted in the time).
Then an overload run against a fresh `ours` with a small queue (--overload_queue_windows) at
--overload_factor x the measured throughput of `ours` at 32 clients: open-loop arrivals for
--seconds, counting 200 / 429 / other statuses and lost requests (no answer).

Output: a table and benchmarks/results/serve_load.json (machine, load average before and after
each level, command, per-level throughput and latency percentiles, ratios against the
baselines at the same client count). The `hf_server` mode imports only the standard library,
torch and transformers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

import serve_breakdown as breakdown  # this directory: the per-request breakdown

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------
# The HF one-at-a-time server (runs under .venv-torch).
# ------------------------------------------------------------------------------------------


def input_buckets(max_input_length: int) -> list[int]:
  """Our padded input lengths (generate.input_buckets): 32, 64, ... and the maximum."""
  buckets, length = [], 32
  while length < max_input_length:
    buckets.append(length)
    length *= 2
  return buckets + [max_input_length]


def output_limit(input_length: int, args: argparse.Namespace) -> int:
  """Our service's output limit for an input of this length (serving/engine.py)."""
  bucket = next(b for b in input_buckets(args.max_input_length) if b >= input_length)
  if not args.output_limit_factor:
    return args.max_decode_length
  return min(args.max_decode_length, max(4, math.ceil(args.output_limit_factor * bucket)))


def hf_server(args: argparse.Namespace) -> int:
  import http.server  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast, T5ForConditionalGeneration  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.hf_threads)
  model = T5ForConditionalGeneration.from_pretrained(args.hf_dir).eval()
  tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.hf_dir, "tokenizer.json"))
  eos = model.config.eos_token_id

  def generate(text: str, types: list[str]) -> str:
    prompt = "".join("<entity>" + t for t in types) + "<text>" + text
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:args.max_input_length - 1]
    inputs = torch.tensor([ids + [eos]])
    with torch.no_grad():
      output = model.generate(inputs, num_beams=args.beam_size, do_sample=False,
                              max_new_tokens=output_limit(len(ids) + 1, args))
    return tokenizer.decode(output[0], skip_special_tokens=True)

  started = time.monotonic()
  generate("北京大学在北京。", ["地点"])  # warm-up: the first call's set-up is not timed
  print(f"hf_server: warm-up generate took {time.monotonic() - started:.2f} s", flush=True)

  class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: the connection closes after each answer (the client reconnects), so the
    # single-threaded server takes waiting clients in turn; with keep-alive it would serve one
    # client's whole loop before accepting the next (latencies of seconds to minutes).
    protocol_version = "HTTP/1.0"

    def log_message(self, *_):
      pass

    def do_GET(self):  # pylint: disable=invalid-name
      self._send(200, {"ready": True})

    def do_POST(self):  # pylint: disable=invalid-name
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      self._send(200, {"generation": generate(body["text"], body["types"])})

    def _send(self, status, payload):
      data = json.dumps(payload, ensure_ascii=False).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

  class Server(http.server.HTTPServer):
    request_queue_size = 256  # the listen backlog: 128 clients connect at once

  server = Server(("127.0.0.1", args.port), Handler)  # one request at a time
  server.serve_forever()
  return 0


# ------------------------------------------------------------------------------------------
# Clients.
# ------------------------------------------------------------------------------------------


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> int:
  return _post_with_headers(connection, path, body)[0]


def _post_with_headers(connection: http.client.HTTPConnection, path: str, body: bytes):
  connection.request("POST", path, body, {"Content-Type": "application/json"})
  response = connection.getresponse()
  response.read()
  return response.status, response.headers


def closed_loop(port: int, path: str, bodies: list[bytes], clients: int, seconds: float,
                max_requests: int, timeout: float, texts: Optional[list[str]] = None) -> dict:
  """`clients` threads, each sending its next request when the previous one is answered.
  With `texts` (the sentence of each body): one record per request (serve_breakdown.record)
  under "records", in completion order."""
  latencies, statuses, lock = [], {}, threading.Lock()
  records = []
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
        status, headers = _post_with_headers(connection, path, bodies[index % len(bodies)])
      except (OSError, http.client.HTTPException) as error:
        with lock:
          errors.append(repr(error))
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        continue
      latency = time.monotonic() - started
      with lock:
        statuses[status] = statuses.get(status, 0) + 1
        slowest[0] = max(slowest[0], latency)
        if status == 200:
          latencies.append(latency)
        if headers.get("X-Punified-Failover"):  # answered by a second Ray replica
          failed_over[0] += 1
        if texts is not None:
          sentence = index % len(bodies)
          records.append(breakdown.record(sentence, latency, status, headers, texts[sentence]))

  slowest = [0.0]  # the slowest answer of any status (a hang would show here)
  failed_over = [0]
  started = time.monotonic()
  threads = [threading.Thread(target=client) for _ in range(clients)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  elapsed = time.monotonic() - started
  result = summarize(latencies, statuses, elapsed, errors) | {
      "clients": clients, "slowest_answer_s": slowest[0], "failed_over": failed_over[0]}
  if texts is not None:
    result["records"] = records
  return result


def _metrics_text(port: int) -> str:
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  connection.request("GET", "/metrics")
  return connection.getresponse().read().decode()


def _labelled(text: str, metric: str, label: str) -> dict[str, float]:
  """{label value: sample} of one Prometheus metric's samples."""
  values = {}
  for line in text.splitlines():
    if line.startswith(metric + "{"):
      labels, value = line.rsplit(" ", 1)
      values[labels.split(f'{label}="')[1].split('"')[0]] = float(value)
  return values


def server_counters(port: int) -> dict[str, dict[str, float]]:
  """Our server's counters so far, from /metrics: decoding batches by compiled size (rows ->
  count) and garbage-collection pauses by generation (count, seconds)."""
  text = _metrics_text(port)
  return {"batches": _labelled(text, "punified_batches_total", "rows"),
          "gc_count": _labelled(text, "punified_gc_pause_seconds_count", "generation"),
          "gc_seconds": _labelled(text, "punified_gc_pause_seconds_sum", "generation")}


def _increase(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
  return {key: value - before.get(key, 0) for key, value in after.items()
          if value > before.get(key, 0)}


def ray_replica_kill(args: argparse.Namespace, bodies: list[bytes]) -> dict:
  """Two Ray Serve replicas of `ours` behind one endpoint, --ray_clients closed-loop clients
  for --seconds; one replica is killed (ray.kill, no restart of that actor) halfway through.
  Counts statuses and transport errors; every request must get an answer within the client
  timeout: 200 (the router retries a request whose replica died on the other one) or 503,
  never 500 (ray_serve.FailoverRouter)."""
  import ray  # pylint: disable=g-import-not-at-top
  from ray import serve  # pylint: disable=g-import-not-at-top
  from punified_jax.serving import ray_serve  # pylint: disable=g-import-not-at-top
  port = free_port()
  started = time.monotonic()
  ray_serve.run(model_dir=args.model_dir, num_replicas=2, port=port, num_cpus_per_replica=1.0,
                beam_size=args.beam_size, batch_size=args.batch_size,
                max_wait_ms=args.max_wait_ms, request_timeout=60.0,
                max_input_length=args.max_input_length,
                max_decode_length=args.max_decode_length,
                output_limit_factor=args.output_limit_factor)
  startup = time.monotonic() - started
  killed = {}

  def kill_one():
    time.sleep(args.seconds / 2)
    name, namespace = ray_serve.replica_actor_names()[0]
    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    killed["at_s"] = args.seconds / 2
    killed["replica"] = name

  killer = threading.Thread(target=kill_one)
  load_before = os.getloadavg()[0]
  try:
    killer.start()
    outcome = closed_loop(port, "/v1/extract", bodies, args.ray_clients, args.seconds,
                          args.max_requests, timeout=120)
    killer.join()
  finally:
    serve.shutdown()
    ray.shutdown()
  return outcome | {"replicas": 2, "killed": killed, "startup_seconds": startup,
                    "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


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
  parser.add_argument("--seconds", type=float, default=15.0, help="per level")
  parser.add_argument("--max_requests", type=int, default=2000, help="per level")
  parser.add_argument("--baseline_clients", default="1,8,32,128",
                      help="levels run on the two baselines")
  parser.add_argument("--beam_size", type=int, default=4)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--max_wait_ms", type=float, default=5.0)
  parser.add_argument("--output_limit_factor", type=float, default=2.25)
  parser.add_argument("--overload_factor", type=float, default=2.0)
  parser.add_argument("--overload_queue_windows", type=int, default=32)
  parser.add_argument("--overload_timeout", type=float, default=30.0)
  parser.add_argument("--hf_threads", type=int, default=1)
  parser.add_argument("--hf_check_threads", type=int, default=2,
                      help="also run HF with this many threads at 1 client (0: skip)")
  parser.add_argument("--max_input_length", type=int, default=256)
  parser.add_argument("--max_decode_length", type=int, default=256)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--servers", default="ours,ours_batch1,hf",
                      help="which runs to make (comma-separated): ours (with the overload "
                           "run), ours_1worker (serve --decode_workers 1), ours_no_gc_freeze, "
                           "ours_follow_order (serve --follow_order), ours_no_budget (serve "
                           "--output_budget 0), ours_no_repeat_end (serve --end_at_repeat "
                           "0), "
                           "ours_batch1, hf, ray_kill (two Ray Serve replicas, one "
                           "killed under load; needs the ray extra)")
  parser.add_argument("--ray_clients", type=int, default=8)
  parser.add_argument("--torch_python", default=os.environ.get(
      "PUNIFIED_TORCH_PYTHON", os.path.join(REPO_ROOT, ".venv-torch", "bin", "python")))
  parser.add_argument("--log_dir", default="/tmp/serve_load_logs")
  parser.add_argument("--results_name", default="serve_load",
                      help="writes benchmarks/results/NAME.json")
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
  texts = [ex.text for ex in examples]
  bodies = [json.dumps({"text": ex.text, "types": types}, ensure_ascii=False).encode()
            for ex in examples]
  os.makedirs(args.log_dir, exist_ok=True)
  levels = [int(c) for c in args.clients.split(",")]
  baseline_levels = [int(c) for c in args.baseline_clients.split(",")]
  servers = set(args.servers.split(","))
  serve = [sys.executable, "-m", "punified_jax", "serve", "--model_dir", args.model_dir,
           "--beam_size", str(args.beam_size), "--log_level", "warning",
           "--max_wait_ms", str(args.max_wait_ms), "--request_timeout", "600",
           "--max_queue_windows", "4096", "--max_input_length", str(args.max_input_length),
           "--max_decode_length", str(args.max_decode_length),
           "--output_limit_factor", str(args.output_limit_factor)]
  results: dict = {"machine": common.machine_info(), "command": common.command_line(),
                   "dataset": args.dataset, "split": args.split, "sentences": len(examples),
                   "types": types, "beam_size": args.beam_size, "batch_size": args.batch_size,
                   "output_limit_factor": args.output_limit_factor,
                   "seconds_per_level": args.seconds, "servers": {}}
  rows = []

  def run_levels(name, port, path, client_levels):
    results["servers"][name] = {}
    closed_loop(port, path, bodies[:1], 1, 600.0, 1, timeout=900)  # one untimed request
    for clients in client_levels:
      load_before = os.getloadavg()[0]
      counters_before = server_counters(port) if path == "/v1/extract" else {}
      ours = path == "/v1/extract"
      outcome = closed_loop(port, path, bodies, clients, args.seconds, args.max_requests,
                            timeout=900, texts=texts if ours else None)
      if ours:  # where the time went (serve_breakdown.py); records kept at 1 client only
        records = outcome.pop("records")
        outcome["breakdown"] = breakdown.summarize(records)
        if clients == 1:
          outcome["records"] = records
          breakdown.print_summary(f"{name} @ 1 client", outcome["breakdown"],
                                  common.print_table)
      outcome["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
      if path == "/v1/extract":  # batches of each compiled size this level ran, GC pauses
        counters = server_counters(port)
        outcome["batches_by_rows"] = _increase(counters["batches"], counters_before["batches"])
        outcome["gc_pauses"] = {
            generation: {"count": count, "ms": 1000 * _increase(
                counters["gc_seconds"], counters_before["gc_seconds"]).get(generation, 0.0)}
            for generation, count in _increase(counters["gc_count"],
                                               counters_before["gc_count"]).items()}
      results["servers"][name][str(clients)] = outcome
      rows.append({"server": name, **outcome})
      print(f"{name} @ {clients} clients: {outcome['sentences_per_second']:.2f} sent/s, "
            f"p50 {outcome['p50_s']}, p99 {outcome['p99_s']}, statuses {outcome['statuses']}, "
            f"load {outcome['load_average_1m']}, batches {outcome.get('batches_by_rows')}, "
            f"GC pauses {outcome.get('gc_pauses')}",
            flush=True)

  def hf_command(threads):
    return [args.torch_python, os.path.abspath(__file__), "hf_server", "--hf_dir", args.hf_dir,
            "--beam_size", str(args.beam_size), "--hf_threads",
            str(threads), "--max_input_length", str(args.max_input_length),
            "--max_decode_length", str(args.max_decode_length), "--output_limit_factor",
            str(args.output_limit_factor)]

  def timed_server(name, command, ready_path, client_levels, path="/v1/extract"):
    port = free_port()
    started = time.monotonic()
    process = start(command + ["--port", str(port)], port, ready_path,
                    os.path.join(args.log_dir, f"{name}.log"))
    results.setdefault("startup_seconds", {})[name] = time.monotonic() - started
    try:
      run_levels(name, port, path, client_levels)
    finally:
      stop(process)

  # 1. Ours with dynamic batching, then the overload run against a small queue.
  if "ours" in servers:
    timed_server("ours", serve + ["--batch_size", str(args.batch_size)], "/ready", levels)
  if "ours" in servers and args.overload_factor > 0:  # 0: no overload run (diagnosis)
    capacity = results["servers"]["ours"].get("32", {}).get("sentences_per_second") or 1.0
    port = free_port()
    process = start(serve + ["--port", str(port), "--batch_size", str(args.batch_size),
                             "--max_queue_windows", str(args.overload_queue_windows),
                             "--request_timeout", str(args.overload_timeout)], port, "/ready",
                    os.path.join(args.log_dir, "ours_overload.log"))
    try:
      load_before = os.getloadavg()[0]
      overload = open_loop(port, "/v1/extract", bodies, args.overload_factor * capacity,
                           args.seconds, timeout=120)
      overload["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    finally:
      stop(process)
    results["overload"] = overload
    print(f"overload at {overload['offered_rate']:.1f}/s: {overload['statuses']}, lost "
          f"{overload['lost']}, admitted p50 {overload['p50_s']} p99 {overload['p99_s']}",
          flush=True)

  # 1a. Ours with one decoding thread (the A/B of --decode_workers).
  if "ours_1worker" in servers:
    timed_server("ours_1worker", serve + ["--batch_size", str(args.batch_size),
                                          "--decode_workers", "1"], "/ready", levels)

  # 1b. Ours without gc.freeze() after warm-up (A/B of GC pauses; diagnosis).
  if "ours_no_gc_freeze" in servers:
    timed_server("ours_no_gc_freeze", serve + ["--batch_size", str(args.batch_size),
                                               "--no_gc_freeze"], "/ready", levels)

  # 1c. Ours with the constraint's target-order rule (no output runs to the limit; costs F1 on
  # Resume with the bench model: BENCHMARKS.md 2e): what the rule does to the latency tail.
  if "ours_follow_order" in servers:
    timed_server("ours_follow_order", serve + ["--batch_size", str(args.batch_size),
                                               "--follow_order"], "/ready", levels)

  # 1d. Ours without the constraint's output budget (BENCHMARKS.md 2n): the budget's A/B.
  if "ours_no_budget" in servers:
    timed_server("ours_no_budget", serve + ["--batch_size", str(args.batch_size),
                                            "--output_budget", "0"], "/ready", levels)

  # 1e. Ours without the repeat rule (BENCHMARKS.md 2o): its A/B.
  if "ours_no_repeat_end" in servers:
    timed_server("ours_no_repeat_end", serve + ["--batch_size", str(args.batch_size),
                                                "--end_at_repeat", "0"], "/ready", levels)

  # 2. Ours without cross-request batching (one window per decode).
  if "ours_batch1" in servers:
    timed_server("ours_batch1", serve + ["--batch_sizes", "1"], "/ready", baseline_levels)

  # 3. HF generate, one request at a time (and a 1-client check with more torch threads).
  if "hf" in servers:
    timed_server("hf_one_at_a_time", hf_command(args.hf_threads), "/",
                 baseline_levels, path="/")
    if args.hf_check_threads:
      timed_server(f"hf_one_at_a_time_{args.hf_check_threads}_threads",
                   hf_command(args.hf_check_threads), "/", [1], path="/")

  # 4. Ray Serve: a replica killed under load.
  if "ray_kill" in servers:
    outcome = ray_replica_kill(args, bodies)
    results["ray_replica_kill"] = outcome
    rows.append({"server": "ray_2_replicas_one_killed", **outcome})
    print(f"ray replica kill: {outcome['statuses']}, failed over {outcome['failed_over']}, "
          f"transport errors "
          f"{outcome['transport_errors']}, slowest answer {outcome['slowest_answer_s']:.1f} s",
          flush=True)

  ratios = {}
  for clients in baseline_levels:
    ours = results["servers"].get("ours", {}).get(str(clients), {}).get("sentences_per_second")
    for baseline in ("hf_one_at_a_time", "ours_batch1", "ours_1worker"):
      other = results["servers"].get(baseline, {}).get(str(clients), {}).get(
          "sentences_per_second")
      if ours and other:
        ratios[f"ours_over_{baseline}@{clients}"] = ours / other
  results["ratios"] = ratios
  results["machine_after"] = {"load_average": list(os.getloadavg())}
  common.print_table(rows, ["server", "clients", "ok", "sentences_per_second", "p50_s", "p90_s",
                            "p99_s", "p99_over_p50", "statuses", "load_average_1m"],
                     "serving load")
  print(json.dumps(ratios, indent=1))
  path = common.write_json(args.results_name, results)
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
