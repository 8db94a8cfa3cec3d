"""span_macro_f1 / offset_exact_f1 with hand-computed values, the postprocessor, SeqIO wiring."""

import inspect
import math

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from punified_jax import entity_types as et
from punified_jax.metrics import (make_metric_fn, ner_postprocessor, offset_exact_f1,
                                  span_macro_f1)
from punified_jax.prompts import format_input, format_target

TYPES = ("地点", "组织", "名称", "时间")
GOLD = [[("地点", "北京"), ("组织", "北京大学")],
        [("名称", "张三"), ("地点", "上海")],
        [("地点", "广州")]]
PRED = [[("地点", "北京"), ("组织", "北京")],
        [("名称", "张三"), ("地点", "上海"), ("地点", "南京")],
        []]


def test_span_macro_f1_hand_computed():
  # 地点: gold {北京, 上海, 广州} = 3, predicted {北京, 上海, 南京} = 3, tp 2
  #       -> P = R = 2/3 = 66.667, F1 = 66.667
  # 组织: gold 1 (北京大学), predicted 1 (北京), tp 0 -> P = R = F1 = 0
  # 名称: gold 1, predicted 1, tp 1 -> 100
  # 时间: no gold, no prediction -> NaN, excluded from the mean (excluded_types = 1)
  # macro F1 = (66.667 + 0 + 100) / 3 = 55.556; micro: tp 3 / predicted 5 / gold 5 -> 60
  out = span_macro_f1(GOLD, PRED, type_names=TYPES)
  assert out["macro_f1"] == pytest.approx(500 / 9)
  assert out["macro_precision"] == pytest.approx(500 / 9)
  assert out["macro_recall"] == pytest.approx(500 / 9)
  assert out["micro_f1"] == pytest.approx(60.0)
  assert out["precision"] == pytest.approx(60.0) and out["recall"] == pytest.approx(60.0)
  assert out["f1/地点"] == pytest.approx(200 / 3)
  assert out["precision/组织"] == 0.0 and out["recall/组织"] == 0.0 and out["f1/组织"] == 0.0
  assert out["f1/名称"] == 100.0
  assert math.isnan(out["f1/时间"]) and math.isnan(out["precision/时间"])
  assert [out[f"support/{t}"] for t in TYPES] == [3.0, 1.0, 1.0, 0.0]
  assert out["excluded_types"] == 1.0
  assert (out["num_sentences"], out["num_gold"], out["num_predicted"],
          out["true_positives"]) == (3.0, 5.0, 5.0, 3.0)


def test_a_type_with_predictions_but_no_gold_scores_zero_and_counts():
  # 时间 predicted once, never gold: P = 0 (0 of 1), R = 0 (0/0 -> 0), F1 = 0, included.
  # macro = (66.667 + 0 + 100 + 0) / 4 = 41.667; micro tp 3, predicted 6, gold 5:
  # P = 50, R = 60, F1 = 2*50*60/110 = 54.545
  pred = [PRED[0], PRED[1], [("时间", "昨天")]]
  out = span_macro_f1(GOLD, pred, type_names=TYPES)
  assert out["f1/时间"] == 0.0 and out["excluded_types"] == 0.0
  assert out["macro_f1"] == pytest.approx(125 / 3)
  assert out["micro_f1"] == pytest.approx(6000 / 110)


def test_repeated_pairs_count_once_per_sentence():
  # Gold lists 北京 twice, prediction once: one distinct pair each -> P = R = 100.
  out = span_macro_f1([[("地点", "北京"), ("地点", "北京")]], [[("地点", "北京")]],
                      type_names=["地点"])
  assert out["macro_f1"] == 100.0 and out["support/地点"] == 1.0


def test_type_names_default_to_requested_and_gold_types():
  records = [{"mentions": [("地点", "北京")], "types": ("地点", "组织")}]
  out = span_macro_f1(records, [[("地点", "北京")]])
  assert [k for k in out if k.startswith("f1/")] == ["f1/地点", "f1/组织"]
  assert out["macro_f1"] == 100.0 and out["excluded_types"] == 1.0


def test_ontonotes_merge():
  gold = [[("地缘政治实体", "北京"), ("地点", "长江")]]
  pred = [[("地点", "北京"), ("地点", "长江")]]
  # No merge, OntoNotes types (地缘政治实体, 地点, 名称, 组织):
  #   地缘政治实体 gold 1 pred 0 -> F1 0; 地点 gold 1 pred 2 tp 1 -> P 50 R 100 F1 66.667;
  #   名称, 组织 excluded -> macro (0 + 66.667) / 2 = 33.333
  plain = make_metric_fn("ontonotes4", type_merge=None)(gold, pred)
  assert plain["macro_f1"] == pytest.approx(100 / 3) and plain["excluded_types"] == 2.0
  # Paper protocol (default): 地缘政治实体 -> 地点, types (地点, 名称, 组织):
  #   地点 gold 2 pred 2 tp 2 -> 100; 名称, 组织 excluded -> macro 100
  merged = make_metric_fn("ontonotes4")(gold, pred)
  assert merged["macro_f1"] == 100.0 and merged["excluded_types"] == 2.0
  assert "f1/地缘政治实体" not in merged and merged["support/地点"] == 2.0
  # Merging can make two gold pairs one: (地缘政治实体, 北京) and (地点, 北京) -> (地点, 北京).
  out = span_macro_f1([[("地缘政治实体", "北京"), ("地点", "北京")]], [[("地点", "北京")]],
                      type_names=et.prompt_names("ontonotes4"), type_merge=et.ONTONOTES_EVAL_MERGE)
  assert out["support/地点"] == 1.0 and out["macro_f1"] == 100.0
  # Other datasets are not merged by default.
  assert "f1/地点" in make_metric_fn("msra")([[("地点", "x")]], [[("地点", "x")]])


def test_offset_exact_f1_hand_computed():
  text1, text2 = "北京和北京去了北京大学", "张三在上海"
  targets = [
      {"mentions": [("地点", "北京"), ("组织", "北京大学")], "text": text1,
       "gold_spans": [("地点", 0, 2), ("地点", 3, 5), ("组织", 7, 11)]},
      {"mentions": [("名称", "张三")], "text": text2, "gold_spans": [("名称", 0, 2)]},
  ]
  predictions = [[("地点", "北京"), ("组织", "北京大学")], [("名称", "张三"), ("地点", "杭州")]]
  # Sentence 1: 北京大学 claims 7:11 first, 北京 then takes 0:2 and 3:5 -> 3 of 3 correct.
  # Sentence 2: 张三 0:2 correct; 杭州 is not in the text -> one wrong 地点 prediction.
  # 地点: gold 2, predicted 3, tp 2 -> P 66.667 R 100 F1 80; 组织, 名称: 100
  # macro (80 + 100 + 100) / 3 = 93.333; micro tp 4 / pred 5 / gold 4 -> P 80 R 100 F1 88.889
  out = offset_exact_f1(targets, predictions, type_names=["地点", "组织", "名称"])
  assert out["offset_f1/地点"] == pytest.approx(80.0)
  assert out["offset_macro_f1"] == pytest.approx(280 / 3)
  assert out["offset_micro_f1"] == pytest.approx(1600 / 18)
  assert out["offset_span_not_in_input"] == 1.0
  # The span metric on the same data: 地点 gold 1 (北京), predicted 2, tp 1 -> F1 66.667.
  span = span_macro_f1(targets, predictions, type_names=["地点", "组织", "名称"])
  assert span["f1/地点"] == pytest.approx(200 / 3)
  assert span["span_not_in_input"] == 1.0


def test_offset_metric_differs_when_the_wrong_occurrence_is_gold():
  # Gold marks only the second 北京 (3:5); the prediction (地点, 北京) is placed at 0:2 and
  # 3:5 -> tp 1, predicted 2 -> P 50, R 100, F1 66.667 (the span metric says 100).
  targets = [{"mentions": [("地点", "北京")], "text": "北京和北京", "gold_spans": [("地点", 3, 5)]}]
  out = offset_exact_f1(targets, [[("地点", "北京")]], type_names=["地点"])
  assert out["offset_f1/地点"] == pytest.approx(200 / 3)
  assert span_macro_f1(targets, [[("地点", "北京")]], type_names=["地点"])["macro_f1"] == 100.0


def test_metric_input_errors():
  with pytest.raises(ValueError, match="targets has 2 sentences but predictions has 1"):
    span_macro_f1([[], []], [[]])
  with pytest.raises(ValueError, match=r"predictions\[0\]: a mention must be"):
    span_macro_f1([[]], [[("地点",)]])
  with pytest.raises(ValueError, match=r"targets\[0\] has no 'mentions' key"):
    span_macro_f1([{"types": ()}], [[]])
  with pytest.raises(ValueError, match=r"predictions\[0\] must be a record dict"):
    span_macro_f1([[]], [3])
  with pytest.raises(ValueError, match=r"targets\[0\] has no gold offsets"):
    offset_exact_f1([{"mentions": [], "text": "x"}], [[]])
  with pytest.raises(ValueError, match="no sentence text"):
    offset_exact_f1([{"mentions": [], "gold_spans": []}], [[]])
  with pytest.raises(ValueError, match="unknown metric variant"):
    make_metric_fn("msra", variant="token")
  with pytest.raises(ValueError, match="type_merge must be"):
    make_metric_fn("msra", type_merge="merge")
  with pytest.raises(ValueError, match="unknown dataset"):
    make_metric_fn("nope")


def test_generation_strings_are_accepted_directly():
  out = span_macro_f1(["((地点:北京),(组织:NULL))"], ["((地点:北京),(组织:北京大"],
                      type_names=["地点", "组织"])
  assert out["macro_f1"] == 100.0 and out["truncated_generations"] == 1.0


# --------------------------------------------------------------------------------------------
# ner_postprocessor (as seqio calls it: example features are numpy values / bytes)


def _example(text, types, gold):
  """A preprocessed eval example as seqio hands it to the postprocessor (numpy, bytes)."""
  located = [(t, text.index(s), text.index(s) + len(s)) for t, s in gold]
  return {
      "inputs_pretokenized": np.bytes_(format_input(text, types).encode("utf-8")),
      "targets_pretokenized": np.bytes_(format_target(gold, types).encode("utf-8")),
      "gold_starts": np.array([s for _, s, _ in located], np.int32),
      "gold_ends": np.array([e for _, _, e in located], np.int32),
      "gold_types": np.array([t.encode("utf-8") for t, _, _ in located], dtype=object),
  }


def test_postprocessor_target_record():
  ex = _example("张三去了北京。", ("地点", "组织"), [("地点", "北京")])
  record = ner_postprocessor("((地点:北京),(组织:NULL))", example=ex, is_target=True)
  assert record == {"mentions": [("地点", "北京")], "types": ("地点", "组织"),
                    "text": "张三去了北京。", "gold_spans": [("地点", 4, 6)], "truncated": False,
                    "unparsed": False, "realigned": 0}


def test_postprocessor_prediction_diagnostics():
  text = "张三在北京买了XK-200手机"
  ex = _example(text, ("地点", "品牌"), [("地点", "北京"), ("品牌", "XK-200")])
  # 名称 is a registry name but not requested: recognised as an item (so 北京's span stays
  # clean) and counted; the lowercased, re-spaced brand is mapped back to the text; the last
  # item is truncated.
  pred = ner_postprocessor("((地点:北京),(名称:张三),(品牌:xk - 200),(品牌:手", example=ex)
  assert pred["mentions"] == [("地点", "北京"), ("名称", "张三"), ("品牌", "XK-200")]
  assert pred["truncated"] and pred["realigned"] == 1 and pred["gold_spans"] is None
  target = ner_postprocessor(ex["targets_pretokenized"].decode(), example=ex, is_target=True)
  out = span_macro_f1([target], [pred], type_names=("地点", "品牌"))
  # 地点 1/1/1, 品牌 1/1/1 -> macro 100; micro: tp 2, predicted 3 (张三 as 名称) -> P 66.667
  assert out["macro_f1"] == 100.0 and out["precision"] == pytest.approx(200 / 3)
  assert out["unrequested_type_predictions"] == 1.0
  assert out["span_not_in_input"] == 0.0
  assert (out["truncated_generations"], out["realigned_spans"]) == (1.0, 1.0)
  no_realign = ner_postprocessor("((品牌:xk - 200))", example=ex, realign_spans=False)
  assert no_realign["mentions"] == [("品牌", "xk - 200")]
  assert span_macro_f1([target], [no_realign])["span_not_in_input"] == 1.0


def test_postprocessor_without_example_and_bad_examples():
  assert ner_postprocessor("((地点:北京))")["mentions"] == [("地点", "北京")]
  assert ner_postprocessor("((地点:北京))")["types"] is None
  with pytest.raises(ValueError, match="'inputs_pretokenized': not an NER prompt"):
    ner_postprocessor("x", example={"inputs_pretokenized": b"no markers"})
  with pytest.raises(ValueError, match="not valid UTF-8"):
    ner_postprocessor("x", example={"inputs_pretokenized": b"\xff"})
  ex = _example("张三", ("名称",), [("名称", "张三")])
  del ex["gold_ends"]
  with pytest.raises(ValueError, match="but not gold_ends"):
    ner_postprocessor("((名称:张三))", example=ex, is_target=True)
  ex = _example("张三", ("名称",), [("名称", "张三")])
  ex["gold_ends"] = np.array([9], np.int32)
  with pytest.raises(ValueError, match=r"gold span 0:9 \(名称\) does not fit"):
    ner_postprocessor("((名称:张三))", example=ex, is_target=True)
  ex["gold_ends"] = np.array([2, 3], np.int32)
  with pytest.raises(ValueError, match="different lengths"):
    ner_postprocessor("((名称:张三))", example=ex, is_target=True)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(generation=st.text())
def test_postprocessor_never_raises_on_model_output(generation):
  ex = _example("张三去了北京。", ("地点", "组织"), [("地点", "北京")])
  record = ner_postprocessor(generation, example=ex)
  assert all(t and s for t, s in record["mentions"])


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(data=st.data())
def test_perfect_predictions_score_100(data):
  types = et.prompt_names("cluener")
  sentences = data.draw(st.lists(st.lists(st.tuples(st.sampled_from(types),
                                                    st.text("北京大学张三,:()", min_size=1,
                                                            max_size=4)), max_size=4),
                                 min_size=1, max_size=5))
  hypothesis.assume(any(sentences))
  out = span_macro_f1(sentences, sentences, type_names=types)
  assert out["macro_f1"] == 100.0 and out["micro_f1"] == 100.0
  assert out["excluded_types"] == len(types) - len({t for s in sentences for t, _ in s})


# --------------------------------------------------------------------------------------------
# SeqIO wiring


def test_metric_fn_signature_is_what_seqio_expects():
  fn = make_metric_fn("msra")
  positional = [n for n, p in inspect.signature(fn).parameters.items()
                if p.default is inspect.Parameter.empty
                and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
  assert positional == ["targets", "predictions"]
  assert fn.__name__ == "span_macro_f1_msra"
  assert make_metric_fn("msra", variant="offset").__name__ == "offset_exact_f1_msra"


def test_seqio_legacy_metric_end_to_end():
  seqio = pytest.importorskip("seqio")
  vocab = seqio.ByteVocabulary()
  examples = [_example("张三去了北京。", ("地点", "名称", "组织"), [("地点", "北京"), ("名称", "张三")]),
              _example("今天下雨。", ("地点", "名称", "组织"), [])]
  generations = ["((地点:北京),(名称:NULL),(组织:NULL))", "((地点:今天),(名称:NULL),(组织:NULL))"]
  ids = [vocab.encode(g) + [vocab.eos_id] for g in generations]
  width = max(map(len, ids))
  model_output = np.array([i + [0] * (width - len(i)) for i in ids], np.int32)
  span_fn = make_metric_fn("msra")
  offset_fn = make_metric_fn("msra", variant="offset")
  features = {"targets": seqio.Feature(vocab)}
  results = {}
  for fn in (span_fn, offset_fn):
    metric = seqio.metrics.LegacyMetric.empty(fn, ner_postprocessor)
    assert metric.model_output_type == seqio.metrics.ModelOutputType.PREDICTION
    results.update(metric.from_model_output(examples, model_output, features).compute())
  # 地点: gold 1 (北京), predicted 2 (北京, 今天), tp 1 -> P 50 R 100 F1 66.667
  # 名称: gold 1, predicted 0 -> F1 0; 组织 excluded -> macro (66.667 + 0) / 2 = 33.333
  assert results["macro_f1"] == pytest.approx(100 / 3)
  assert results["offset_macro_f1"] == pytest.approx(100 / 3)
  assert results["excluded_types"] == 1.0
