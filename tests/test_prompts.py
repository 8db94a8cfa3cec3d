"""Prompt formatting, prompt modes and prefix-LM examples."""

import collections

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from punified_jax import entity_types as et
from punified_jax import prompts
from punified_jax.data import Example
from punified_jax.prompts import (ENTITY_MARKER, NULL, TEXT_MARKER, format_input, format_target,
                                  make_ner_example, make_prefix_lm_example, parse_input,
                                  sample_random_types)

# 张三昨天去了北京大学，北京很好。 : 张三 0:2 PER, 北京大学 6:10 ORG, 北京 11:13 LOC.
TEXT = "张三昨天去了北京大学，北京很好。"
EXAMPLE = Example(TEXT, [(6, 10, "ORG"), (11, 13, "LOC"), (0, 2, "PER")])


def test_constants():
  assert (ENTITY_MARKER, TEXT_MARKER, NULL) == ("<entity>", "<text>", "NULL")
  assert prompts.MODES == ("dataset", "random", "random_exact")


def test_format_input_keeps_text_unchanged():
  assert format_input("张三昨天去了北京大学。", ["地点", "组织"]) == (
      "<entity>地点<entity>组织<text>张三昨天去了北京大学。")
  assert format_input("  Apple iPhone X ", ("品牌",)) == "<entity>品牌<text>  Apple iPhone X "
  assert format_input("", ("品牌",)) == "<entity>品牌<text>"


def test_format_input_rejects_bad_type_lists():
  with pytest.raises(ValueError, match="at least one entity type"):
    format_input("x", [])
  with pytest.raises(ValueError, match="repeated in the prompt: 地点"):
    format_input("x", ["地点", "组织", "地点"])
  with pytest.raises(ValueError, match="contains ':'"):
    format_input("x", ["地:点"])
  with pytest.raises(ValueError, match="contains '<text>'"):
    format_input("x", ["a<text>"])
  with pytest.raises(ValueError, match="non-empty string"):
    format_input("x", [""])
  with pytest.raises(TypeError, match="not the string"):
    format_input("x", "地点")
  with pytest.raises(TypeError, match="text must be a str"):
    format_input(None, ["地点"])


def test_format_target_the_guide_example():
  mentions = [("组织", "北京大学"), ("地点", "北京"), ("地点", "上海")]
  assert format_target(mentions, ["地点", "组织", "时间"]) == (
      "((地点:北京),(地点:上海),(组织:北京大学),(时间:NULL))")


def test_format_target_dedupes_and_leaves_out_unrequested_types():
  mentions = [("地点", "北京"), ("名称", "张三"), ("地点", "北京"), ("地点", "上海")]
  assert format_target(mentions, ["地点"]) == "((地点:北京),(地点:上海))"
  assert format_target([], ["地点", "组织"]) == "((地点:NULL),(组织:NULL))"
  # The same text under two types is two items.
  assert format_target([("地点", "北京"), ("组织", "北京")], ["组织", "地点"]) == (
      "((组织:北京),(地点:北京))")


def test_format_target_rejects_unreadable_spans():
  with pytest.raises(ValueError, match="reserved"):
    format_target([("地点", "NULL")], ["地点"])
  with pytest.raises(ValueError, match="empty span"):
    format_target([("地点", "")], ["地点"])
  with pytest.raises(ValueError, match=r"contains '\),\(组织:'"):
    format_target([("地点", "甲),(组织:乙")], ["地点", "组织"])
  # Only requested types start items, so the same span is fine when 组织 is not requested.
  assert format_target([("地点", "甲),(组织:乙")], ["地点"]) == "((地点:甲),(组织:乙))"
  with pytest.raises(ValueError, match="pair"):
    format_target([("地点",)], ["地点"])
  with pytest.raises(ValueError, match="pair of strings"):
    format_target([("地点", 3)], ["地点"])


def test_parse_input_literal_and_errors():
  assert parse_input("<entity>地点<entity>组织<text>a<text>b") == (("地点", "组织"), "a<text>b")
  with pytest.raises(ValueError, match="no <text> marker"):
    parse_input("北京")
  with pytest.raises(ValueError, match="expected <entity> first"):
    parse_input("地点<text>北京")


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(text=st.text(), types=st.lists(st.sampled_from(et.ALL_PROMPT_NAMES), min_size=1,
                                                 max_size=10, unique=True))
def test_parse_input_inverts_format_input(text, types):
  assert parse_input(format_input(text, types)) == (tuple(types), text)


# --------------------------------------------------------------------------------------------
# make_ner_example


def test_dataset_mode():
  assert make_ner_example(EXAMPLE, "msra", "dataset") == [{
      "inputs": "<entity>地点<entity>名称<entity>组织<text>" + TEXT,
      "targets": "((地点:北京),(名称:张三),(组织:北京大学))",
      "types": ("地点", "名称", "组织"),
  }]
  # OntoNotes: GPE is its own prompt name during training.
  ex = Example("去北京", [(1, 3, "GPE")])
  assert make_ner_example(ex, "ontonotes4")[0]["targets"] == (
      "((地缘政治实体:北京),(地点:NULL),(名称:NULL),(组织:NULL))")


def test_repeated_mention_is_one_item():
  ex = Example("北京和北京", [(0, 2, "LOC"), (3, 5, "LOC")])
  assert make_ner_example(ex, "msra")[0]["targets"] == "((地点:北京),(名称:NULL),(组织:NULL))"


def test_random_mode_is_a_subset_of_the_37_and_deterministic_given_a_seed():
  first = make_ner_example(EXAMPLE, "msra", "random", 7)
  assert first == make_ner_example(EXAMPLE, "msra", "random", 7)
  assert first == make_ner_example(EXAMPLE, "msra", "random", np.random.default_rng(7))
  (out,) = first
  types = out["types"]
  assert 1 <= len(types) <= 37 and len(set(types)) == len(types)
  assert set(types) <= set(et.PAPER_PROMPT_NAMES)
  assert out["inputs"] == format_input(TEXT, types)
  gold = [("名称", "张三"), ("组织", "北京大学"), ("地点", "北京")]
  assert out["targets"] == format_target(gold, types)


def test_random_types_distribution():
  # 3000 draws from one seeded generator: k takes every value 1..37 and averages (1+37)/2 = 19;
  # every name is drawn; with k uniform, a name is in a draw with probability mean(k)/37 = 0.51.
  rng = np.random.default_rng(0)
  draws = [sample_random_types(rng) for _ in range(3000)]
  ks = collections.Counter(len(d) for d in draws)
  assert set(ks) == set(range(1, 38))
  assert 18 < np.mean([len(d) for d in draws]) < 20
  names = collections.Counter(n for d in draws for n in d)
  assert set(names) == set(et.PAPER_PROMPT_NAMES)
  assert all(0.45 < c / 3000 < 0.57 for c in names.values())
  # The order is random too: the first name is not always the registry's first.
  assert len({d[0] for d in draws}) == 37


def test_random_exact_mode_gives_random_then_exact():
  ex = Example(TEXT, [(0, 2, "name"), (6, 10, "organization"), (11, 13, "address")])
  random_part, exact = make_ner_example(ex, "cluener", "random_exact", 3)
  # The first example is exactly what "random" mode gives with the same seed.
  assert random_part == make_ner_example(ex, "cluener", "random", 3)[0]
  # Exact types in registry order (名称, 组织, 地点), not text or sample order.
  assert exact == {"inputs": "<entity>名称<entity>组织<entity>地点<text>" + TEXT,
                   "targets": "((名称:张三),(组织:北京大学),(地点:北京))",
                   "types": ("名称", "组织", "地点")}


def test_random_exact_without_gold_falls_back_to_dataset_types():
  _, exact = make_ner_example(Example("今天天气很好"), "ecommerce", "random_exact", 0)
  assert exact == {"inputs": "<entity>品牌<entity>商品<text>今天天气很好",
                   "targets": "((品牌:NULL),(商品:NULL))", "types": ("品牌", "商品")}


def test_make_ner_example_errors():
  with pytest.raises(ValueError, match="unknown prompt mode 'exact'"):
    make_ner_example(EXAMPLE, "msra", "exact")
  with pytest.raises(ValueError, match="needs rng"):
    make_ner_example(EXAMPLE, "msra", "random")
  with pytest.raises(TypeError, match="numpy Generator or an int seed"):
    make_ner_example(EXAMPLE, "msra", "random", "7")
  with pytest.raises(ValueError, match="has no entity type 'name'"):
    make_ner_example(Example("张三", [(0, 2, "name")]), "msra")
  with pytest.raises(ValueError, match="does not fit a text of 2 characters"):
    make_ner_example(Example("张三", [(0, 5, "PER")]), "msra")
  with pytest.raises(ValueError, match="unknown dataset"):
    make_ner_example(EXAMPLE, "nope")


# --------------------------------------------------------------------------------------------
# prefix LM


def test_prefix_lm_literal_and_short_texts():
  out = make_prefix_lm_example("ab", 0)
  assert out == {"inputs": "a", "targets": "b"}  # k in 1..1
  assert make_prefix_lm_example("a", 0) is None
  assert make_prefix_lm_example("", 0) is None
  with pytest.raises(TypeError, match="text must be a str"):
    make_prefix_lm_example(b"ab", 0)


def test_prefix_lm_split_positions_cover_1_to_len_minus_1():
  rng = np.random.default_rng(1)
  ks = {len(make_prefix_lm_example("北京大学", rng)["inputs"]) for _ in range(200)}
  assert ks == {1, 2, 3}


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(text=st.text(min_size=2), seed=st.integers(0, 2**32 - 1))
def test_prefix_lm_parts_join_to_the_text(text, seed):
  out = make_prefix_lm_example(text, seed)
  assert out["inputs"] + out["targets"] == text
  assert out["inputs"] and out["targets"]
  assert ENTITY_MARKER not in out["inputs"] or ENTITY_MARKER in text
  assert out == make_prefix_lm_example(text, seed)
