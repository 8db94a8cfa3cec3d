"""Markdown tables for BENCHMARKS.md from benchmarks/results/*.json (no measuring here).

    .venv/bin/python benchmarks/report.py [--results benchmarks/results] [name ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def fmt(value, digits: int = 3) -> str:
  if value is None:
    return "—"
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    if value != value:  # NaN
      return "—"
    if abs(value) >= 1000:
      return f"{value:,.0f}"
    return f"{value:.{digits}g}"
  return str(value)


def table(rows, columns, headers=None) -> str:
  headers = headers or columns
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
  return "\n".join(lines)


def header(payload) -> str:
  m = payload["machine"]
  return (f"Command: `{payload['command']}`  \n"
          f"Machine: {m.get('cpu_model')} (family {m.get('cpu_family')}), {m.get('cpus')} CPUs, {m.get('ram_gib')} GiB; "
          f"{payload.get('versions')}; date {m.get('date')}; load average at start {m.get('load_average')}")


def train_report(payload) -> str:
  rows = payload["results"]
  out = [header(payload), "",
         f"Real-token fraction of computed positions: " + ", ".join(
             f"{k} {v['real_fraction']:.2f}" for k, v in payload["padding"].items()), "",
         table(rows, ["size", "dtype", "run", "tokens_per_s", "step_s", "first_step_s", "gflops_per_s", "peak_fraction",
                      "vs_best_torch_paper", "vs_best_torch_grouped", "flops_vs_torch_fp32", "target_loss",
                      "time_to_loss_s", "final_loss_mean10"],
               ["size", "dtype", "run", "target tok/s", "step s", "1st step s", "GFLOP/s", "of peak",
                "vs best torch paper", "vs best torch grouped", "FLOP/s vs torch fp32", "loss target",
                "s to target", "final loss (10)"])]
  return "\n".join(out)


def extract_report(payload) -> str:
  return "\n".join([header(payload), "", table(
      payload["results"], ["beam", "stopping", "side", "sentences_per_s", "speedup_vs_hf", "warmup_s", "pass_s", "macro_f1",
                           "micro_f1", "same_pairs_as_extractor", "same_text_as_decode_batch"],
      ["beam", "stopping", "side", "sentences/s", "vs HF", "warm-up s", "pass s", "macro F1", "micro F1",
       "same pairs as Extractor", "same text as decode_batch"])])


def decoding_report(payload) -> str:
  """Issue 13's table from an extract_throughput run with --constrained (names fast_decoding_*):
  per beam size the constrained Extractor (each search timed) against HF `generate` in one
  process, as the ratio of median passes and as the median of the paired passes' ratios, with
  macro F1 against the step-by-step search's and decoder calls per output token."""
  results = payload["results"]
  # The row "ours_constrained" is the Extractor's default search: "auto" (fast at greedy,
  # allowed with beams) when the run listed it in --extractor_searches, else "allowed" (the
  # default before "auto").
  auto = "auto" in str(payload.get("settings", {}).get("extractor_searches", ""))
  default_search = lambda beam: (f"auto: {'fast' if beam == 1 else 'allowed'}" if auto else "allowed")
  out = []
  for beam in sorted({r["beam"] for r in results}):
    by_side = {r["side"]: r for r in results if r["beam"] == beam}
    hf, stepwise = by_side.get("hf_generate"), by_side.get("decode_batch_constrained_stepwise")
    for side in sorted(s for s in by_side if s.startswith("ours_constrained")):
      row = by_side[side]
      out.append({"dataset": payload.get("dataset"), "beam": beam,
                  "search": side[len("ours_constrained_"):] or default_search(beam),
                  "pass_s": row["pass_s"], "hf_pass_s": hf and hf["pass_s"],
                  "speedup_vs_hf": row.get("speedup_vs_hf"), "paired_speedup": row.get("paired_speedup"),
                  "paired_speedups": ", ".join(f"{x:.2f}" for x in row.get("paired_speedups", [])),
                  "f1": f"{row['macro_f1']:.2f} / {stepwise['macro_f1']:.2f} / {hf['macro_f1']:.2f}"
                        if stepwise and hf else None,
                  "calls_per_token": row.get("calls_per_token")})
  return "\n".join([header(payload), "", table(
      out, ["dataset", "beam", "search", "pass_s", "hf_pass_s", "speedup_vs_hf", "paired_speedup",
            "paired_speedups", "f1", "calls_per_token"],
      ["dataset", "beam", "Extractor search", "ours pass s", "HF pass s", "vs HF (medians)",
       "vs HF (paired)", "paired, per pass", "macro F1 ours / step-by-step / HF",
       "decoder calls per token"])])


def scaling_report(payload) -> str:
  parts = [header(payload)]
  if payload.get("layouts"):
    parts += ["", table(payload["layouts"], ["layout", "devices", "mesh", "param_mib_per_device", "opt_mib_per_device",
                                             "compile_s", "step_s", "gflops_per_s", "peak_gib_per_device"],
                        ["layout", "devices", "mesh", "params MiB/device", "optimizer MiB/device", "compile s",
                         "step s", "GFLOP/s", "compiled peak GiB/device"])]
  if payload.get("memory"):
    parts += ["", table(payload["memory"], ["size", "params_m", "remat", "microbatches", "layout", "devices",
                                            "argument_gib", "temp_gib", "peak_gib_per_device",
                                            "total_gib_all_devices", "fits_24gib"],
                        ["size", "params (M)", "remat", "micro-batches", "layout", "devices", "state GiB/device",
                         "temporaries GiB/device", "peak GiB/device", "all devices GiB", "fits 24 GiB"])]
  return "\n".join(parts)


def startup_report(payload) -> str:
  return "\n".join([header(payload), "", table(
      payload["results"], ["size", "mode", "setup_s", "first_step_s", "compile_s", "step_compile_s", "cache_hits"],
      ["size", "cache", "to `training steps` s", "to step 1 s", "compiling s (sum)", "train step compile s",
       "cache hits"]), "", f"Non-compile phases (fresh process): {payload.get('phases')}"])


def cpu_peak_report(payload) -> str:
  peaks = payload["peak_flops"]
  return "\n".join([header(payload), "",
                    f"All-core clock {payload['ghz_used']:.2f} GHz (per core {payload['clock_ghz_per_core']}; "
                    f"base {payload['base_ghz']:.2f}); peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
                    f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s", "",
                    table(payload["results"], ["shape", "dtype", "xla_gflops", "xla_of_peak", "torch_gflops",
                                               "torch_of_peak"],
                          ["m x k x n", "dtype", "XLA GFLOP/s", "XLA of peak", "torch GFLOP/s", "torch of peak"])])


REPORTS = {"cpu_peak": cpu_peak_report, "train_throughput": train_report, "extract_throughput": extract_report, "scaling": scaling_report,
           "startup": startup_report, "fast_decoding": decoding_report}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--results", default=common.RESULTS_DIR)
  parser.add_argument("names", nargs="*", help="result files without .json (default: all known)")
  args = parser.parse_args(argv)
  names = args.names or sorted(n[:-5] for n in os.listdir(args.results) if n.endswith(".json"))
  for name in names:
    kind = next((k for k in REPORTS if name.startswith(k)), None)
    if kind is None:
      continue
    with open(os.path.join(args.results, f"{name}.json"), encoding="utf-8") as handle:
      payload = json.load(handle)
    print(f"\n### {name}\n\n{REPORTS[kind](payload)}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
