import pytest

from punified_jax import entity_types as et
from punified_jax.data import Example, Span


def test_paper_has_37_unique_prompt_names():
  assert len(et.PAPER_PROMPT_NAMES) == 37
  assert et.PAPER_PROMPT_NAMES[:3] == ("品牌", "商品", "地点")


def test_dataset_names():
  assert et.PAPER_DATASETS == ("ecommerce", "msra", "ontonotes4", "peoples_daily", "boson",
                               "resume", "cluener", "ccks2021")
  assert et.DATASETS[-2:] == ("weibo", "peoples_daily_1998")


def test_type_counts_match_paper_table_6():
  counts = {ds: len(et.raw_types(ds)) for ds in et.PAPER_DATASETS}
  assert counts == {"ecommerce": 2, "msra": 3, "ontonotes4": 4, "peoples_daily": 4, "boson": 6,
                    "resume": 8, "cluener": 10, "ccks2021": 17}


def test_prompt_name_lookup_and_errors():
  assert et.prompt_name("resume", "LOC") == "籍贯"
  assert et.prompt_name("msra", "LOC") == "地点"
  assert et.prompt_names("ontonotes4") == ("地缘政治实体", "地点", "名称", "组织")
  with pytest.raises(ValueError, match="has no entity type 'XYZ'.*NAME, CONT"):
    et.prompt_name("resume", "XYZ")
  with pytest.raises(ValueError, match="unknown dataset 'foo'"):
    et.raw_types("foo")


def test_registry_is_read_only():
  with pytest.raises(TypeError):
    et.TYPE_NAMES["resume"]["NAME"] = "x"


def test_example_sorts_and_validates_spans():
  ex = Example("张三去了北京", [(4, 6, "LOC"), Span(0, 2, "PER")])
  assert ex.spans == (Span(0, 2, "PER"), Span(4, 6, "LOC"))
  assert ex.mentions() == [("PER", "张三"), ("LOC", "北京")]
  assert ex.validate() is ex
  with pytest.raises(ValueError, match="span 5:9 .LOC. does not fit a text of 6 characters"):
    Example("张三去了北京", [(5, 9, "LOC")]).validate()
