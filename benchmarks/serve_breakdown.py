"""Where the latency tail of the service comes from: per-request records -> a breakdown.

Used by serve_load.py.  Each answered request of our service carries its server-side phases
(`Server-Timing`: read, encode, queue, decode, parse, total, in ms) and its windows
(`X-Punified-Windows`: input tokens, bucket, output tokens, whether the output hit its limit,
batch rows); see punified_jax/serving/trace.py.  The load test keeps one record per request
(sentence index, client latency, those headers) and this module summarizes them:

* `tail`: the requests at or above the p99 latency, with everything recorded about them, next
  to the median request's phases;
* `by_output_tokens` / `by_input_chars`: p50, p99 and p99/p50 within groups of similar output
  length (or input length): whether the tail is the data (long outputs decode longer) or noise
  inside a group (scheduling, GC, a first-use compile);
* `first_use`: each sentence's first request against its later ones (a shape compiled on first
  use, or any other one-time cost, shows as first >> later).
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Optional, Sequence

PHASES = ("read", "encode", "queue", "decode", "parse", "total")


def parse_server_timing(header: Optional[str]) -> dict[str, float]:
  """{phase: ms} from a `Server-Timing` header (empty when absent)."""
  phases = {}
  for part in (header or "").split(","):
    name, _, rest = part.strip().partition(";dur=")
    if name and rest:
      phases[name] = float(rest)
  return phases


def record(index: int, latency: float, status: int, headers: Any, text: str) -> dict:
  """One request's record (`headers`: the response's, or None)."""
  phases = parse_server_timing(headers.get("Server-Timing") if headers else None)
  windows = json.loads(headers.get("X-Punified-Windows") or "[]") if headers else []
  outputs = [w.get("out") or 0 for w in windows]
  return {"sentence": index, "status": status, "latency_ms": latency * 1000,
          "chars": len(text), "windows": len(windows),
          "input_tokens": max((w["in"] for w in windows), default=0),
          "bucket": max((w["bucket"] for w in windows), default=0),
          "output_tokens": max(outputs, default=0), "output_tokens_sum": sum(outputs),
          "hit_limit": any(w.get("limit") for w in windows),
          "hit_budget": any(w.get("budget") for w in windows),
          "rows": max((w["rows"] for w in windows), default=0),
          "batch_windows": max((w["batch"] for w in windows), default=0),
          **{f"{phase}_ms": phases.get(phase) for phase in PHASES}}


def _percentile(values: Sequence[float], p: float) -> Optional[float]:
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else None


def _group_stats(name: str, records: list[dict]) -> dict:
  latencies = [r["latency_ms"] for r in records]
  p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
  return {"group": name, "requests": len(records), "p50_ms": p50, "p99_ms": p99,
          "p99_over_p50": p99 / p50 if p50 else None,
          "mean_output_tokens": statistics.fmean(r["output_tokens"] for r in records),
          "hit_limit": sum(r["hit_limit"] for r in records),
          "hit_budget": sum(r.get("hit_budget", False) for r in records)}


def _groups(records: list[dict], field: str, edges: Sequence[int]) -> list[dict]:
  groups = []
  low = 0
  for high in list(edges) + [None]:
    members = [r for r in records if r[field] >= low and (high is None or r[field] < high)]
    if members:
      groups.append(_group_stats(f"{field} {low}-{'' if high is None else high - 1}", members))
    low = high
  return groups


def summarize(records: list[dict]) -> dict:
  """The breakdown (module docstring) of one level's records; answered requests only."""
  answered = [r for r in records if r["status"] == 200 and r.get("total_ms") is not None]
  if not answered:
    return {"requests": 0}
  latencies = [r["latency_ms"] for r in answered]
  p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
  tail = sorted((r for r in answered if r["latency_ms"] >= p99),
                key=lambda r: -r["latency_ms"])
  middle = sorted(answered, key=lambda r: r["latency_ms"])[len(answered) // 2]
  phase_means = {
      label: {phase: statistics.fmean(r[f"{phase}_ms"] for r in rows) for phase in PHASES}
      for label, rows in (("all", answered), ("tail", tail),
                          ("below_p90", [r for r in answered
                                         if r["latency_ms"] < _percentile(latencies, 90)]))}
  by_sentence: dict[int, list[dict]] = {}
  for r in answered:  # records are in completion order: the first of a sentence came first
    by_sentence.setdefault(r["sentence"], []).append(r)
  repeated = [rows for rows in by_sentence.values() if len(rows) > 1]
  first_over_later = [rows[0]["latency_ms"] / statistics.median(x["latency_ms"] for x in rows[1:])
                      for rows in repeated]
  client_overhead = [r["latency_ms"] - r["total_ms"] for r in answered]
  # The data's own spread (each sentence's median latency: repeats average out machine noise)
  # against the noise (a request's latency over its sentence's median).
  medians = [statistics.median(x["latency_ms"] for x in rows) for rows in by_sentence.values()]
  spread = [r["latency_ms"] / statistics.median(x["latency_ms"] for x in by_sentence[r["sentence"]])
            for r in answered if len(by_sentence[r["sentence"]]) > 1]
  med_p50, med_p99 = _percentile(medians, 50), _percentile(medians, 99)
  return {
      "requests": len(answered), "p50_ms": p50, "p99_ms": p99,
      "p99_over_p50": p99 / p50 if p50 else None,
      "tail": tail, "median_request": middle, "phase_means_ms": phase_means,
      "client_minus_server_ms": {"p50": _percentile(client_overhead, 50),
                                 "p99": _percentile(client_overhead, 99)},
      "by_output_tokens": _groups(answered, "output_tokens", (20, 40, 60, 80, 120)),
      "by_input_chars": _groups(answered, "chars", (20, 40, 80, 120)),
      "first_use": {"sentences_repeated": len(repeated),
                    "median_first_over_later": (statistics.median(first_over_later)
                                                if first_over_later else None),
                    "first_over_later_above_2": sum(x > 2 for x in first_over_later)},
      "per_sentence_median": {"sentences": len(medians), "p50_ms": med_p50, "p99_ms": med_p99,
                              "p99_over_p50": med_p99 / med_p50 if med_p50 else None},
      "repeat_over_sentence_median": {"p50": _percentile(spread, 50),
                                      "p99": _percentile(spread, 99)},
      "latency_output_tokens_correlation": _correlation(
          [r["output_tokens_sum"] for r in answered], latencies),
  }


def _correlation(xs: list[float], ys: list[float]) -> Optional[float]:
  if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
    return None
  return statistics.correlation(xs, ys)


def print_summary(name: str, summary: dict, print_table) -> None:
  """A short table of the breakdown (`print_table`: benchmarks.common.print_table)."""
  if not summary.get("requests"):
    return
  print(f"\n{name}: {summary['requests']} answered, p50 {summary['p50_ms']:.1f} ms, p99 "
        f"{summary['p99_ms']:.1f} ms (x{summary['p99_over_p50']:.2f}); corr(latency, output "
        f"tokens) {summary['latency_output_tokens_correlation']}; first use / later (median) "
        f"{summary['first_use']['median_first_over_later']}; client - server p50/p99 "
        f"{summary['client_minus_server_ms']}; per-sentence medians {summary['per_sentence_median']}"
        f"; a request over its sentence's median {summary['repeat_over_sentence_median']}")
  means = [{"requests": label, **{p: round(v, 2) for p, v in phases.items()}}
           for label, phases in summary["phase_means_ms"].items()]
  print_table(means, ["requests", *PHASES], f"{name}: mean server-side phases (ms)")
  print_table(summary["tail"], ["sentence", "latency_ms", "chars", "windows", "input_tokens",
                                "output_tokens", "hit_limit", "hit_budget", "rows", "queue_ms",
                                "decode_ms",
                                "parse_ms", "total_ms"], f"{name}: requests at/above p99")
  print_table(summary["by_output_tokens"] + summary["by_input_chars"],
              ["group", "requests", "p50_ms", "p99_ms", "p99_over_p50", "mean_output_tokens",
               "hit_limit", "hit_budget"],
              f"{name}: latency by output tokens and by input characters")
