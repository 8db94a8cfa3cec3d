"""Evaluation reports: summary, F1 table, JSON + PNG, metrics.jsonl curves and errors."""

import json

import pytest

from punified_jax import reports
from punified_jax.commands import report as report_cmd

EVAL = {
    "step": 500, "mean": 62.5, "beam_size": 4, "constrained": True, "selection_metric": "macro_f1",
    "tasks": {
        "punified_ner_resume": {"macro_f1": 75.0, "micro_f1": 80.0, "precision": 90.0,
                                "recall": 72.0, "offset_macro_f1": 70.0,
                                "f1/名称": 100.0, "precision/名称": 100.0, "recall/名称": 100.0,
                                "support/名称": 3, "f1/学历": 50.0, "precision/学历": None,
                                "recall/学历": 50.0, "support/学历": 2,
                                "span_not_in_input": 1, "unrequested_type_predictions": 0},
        "punified_ner_cluener_random": {"macro_f1": 50.0, "micro_f1": 40.0, "precision": 40.0,
                                        "recall": 40.0},
    },
}


def test_summary_maps_tasks_to_datasets_and_types():
  summary = reports.summarize(EVAL)
  assert list(summary["datasets"]) == ["cluener", "resume"]
  resume = summary["datasets"]["resume"]
  assert resume["macro_f1"] == 75.0 and resume["offset_macro_f1"] == 70.0
  assert resume["types"] == {
      "名称": {"f1": 100.0, "precision": 100.0, "recall": 100.0, "support": 3.0},
      "学历": {"f1": 50.0, "precision": None, "recall": 50.0, "support": 2.0}}
  assert resume["span_not_in_input"] == 1.0
  assert summary["mean_macro_f1"] == 62.5 and summary["step"] == 500


def test_f1_table_is_literal():
  table = reports.format_f1_table(reports.summarize(EVAL), paper=True)
  assert table.splitlines() == [
      "dataset  macro F1  micro F1  precision  recall",
      "-" * 46,
      "cluener     50.00     40.00      40.00   40.00",
      "resume      75.00     80.00      90.00   72.00",
      "-" * 46,
      "mean        62.50                             ",
      "paper (PUnifiedNER, Table 1, test/dev sets): cluener 77.00, resume 97.18",
  ]
  assert "paper" not in reports.format_f1_table(reports.summarize(EVAL), paper=False)


def test_write_report_json_png_and_curves(tmp_path):
  (tmp_path / "eval").mkdir()
  early = {**EVAL, "step": 100, "tasks": {**EVAL["tasks"], "punified_ner_resume": {
      **EVAL["tasks"]["punified_ner_resume"], "macro_f1": 60.0}}}
  (tmp_path / "eval" / "step_100.json").write_text(json.dumps(early))
  (tmp_path / "eval" / "step_500.json").write_text(json.dumps(EVAL))
  (tmp_path / "metrics.jsonl").write_text(
      "\n".join(json.dumps({"step": s, "train/loss": 4.0 / s}) for s in (10, 20, 30)) + "\n")
  latest = reports.latest_eval_json(str(tmp_path / "eval"))
  assert latest.endswith("step_500.json")
  summary = reports.write_report(latest, str(tmp_path / "out"), runs={"joint": str(tmp_path)})
  written = json.loads((tmp_path / "out" / "report.json").read_text())
  assert written["datasets"]["resume"]["types"]["名称"]["f1"] == 100.0
  png = (tmp_path / "out" / "report.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
  assert summary["png"].endswith("report.png")
  # Issue 11 item 7: per-dataset F1 over the evaluated steps (also drawn in the PNG).
  assert summary["f1_over_steps"] == {"cluener": {100: 50.0, 500: 50.0},
                                      "resume": {100: 60.0, 500: 75.0}}
  assert written["f1_over_steps"] == {"cluener": {"100": 50.0, "500": 50.0},
                                      "resume": {"100": 60.0, "500": 75.0}}
  assert reports.curve(reports.read_metrics_jsonl(str(tmp_path / "metrics.jsonl")),
                       "train/loss") == ([10, 20, 30], [0.4, 0.2, 4.0 / 30])


def test_errors_name_file_and_line(tmp_path):
  bad = tmp_path / "metrics.jsonl"
  bad.write_text('{"step": 1}\nnot json\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not JSON"):
    reports.read_metrics_jsonl(str(bad))
  with pytest.raises(FileNotFoundError, match="no step_<N>.json"):
    reports.latest_eval_json(str(tmp_path))


def test_report_command(tmp_path, capsys):
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "step_500.json").write_text(json.dumps(EVAL))
  import argparse
  parser = argparse.ArgumentParser()
  report_cmd.add_arguments(parser)
  code = report_cmd.run(parser.parse_args(["--model_dir", str(tmp_path), "--output",
                                           str(tmp_path / "r"), "--no_paper"]))
  out = capsys.readouterr().out
  assert code == 0 and "resume      75.00" in out and (tmp_path / "r" / "report.png").exists()
  code = report_cmd.run(parser.parse_args(["--output", str(tmp_path / "r")]))
  assert code == 2
