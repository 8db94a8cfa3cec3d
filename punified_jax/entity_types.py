"""Dataset names and the entity-type registry (raw label -> Chinese prompt name).

The prompt names are the paper's (Table 6 and its released code). They are what the model
reads in the input (`<entity>地点<entity>组织<text>...`) and writes in the target. Raw labels are
what each corpus calls the type after its reader has decoded the release format (MSRA's
`nr/ns/nt` become `PER/LOC/ORG`; People's Daily 1998's `nr/ns/nt/t` become `PER/LOC/ORG/T`,
the labels of the People Daily 2014 corpus it stands in for).
"""

from __future__ import annotations

import types

# The paper's eight datasets, in the order of its Table 1 / Table 5.
PAPER_DATASETS: tuple[str, ...] = (
    "ecommerce", "msra", "ontonotes4", "peoples_daily", "boson", "resume", "cluener", "ccks2021",
)
# Extra corpora we read: Weibo (not in the paper's joint run) and People's Daily 1998
# (a stand-in for People Daily 2014, which could not be obtained).
EXTRA_DATASETS: tuple[str, ...] = ("weibo", "peoples_daily_1998")
DATASETS: tuple[str, ...] = PAPER_DATASETS + EXTRA_DATASETS

_PEOPLES_DAILY = {"LOC": "地点", "PER": "名称", "ORG": "组织", "T": "时间"}

# Order inside each dict is the order used for dataset-dependent prompts (the paper's Table 6).
_TYPE_NAMES: dict[str, dict[str, str]] = {
    "ecommerce": {"HP": "品牌", "HC": "商品"},
    "msra": {"LOC": "地点", "PER": "名称", "ORG": "组织"},
    "ontonotes4": {"GPE": "地缘政治实体", "LOC": "地点", "PER": "名称", "ORG": "组织"},
    "peoples_daily": dict(_PEOPLES_DAILY),
    "boson": {
        "product_name": "产品", "time": "时间", "person_name": "名称", "org_name": "组织",
        "location": "地点", "company_name": "公司",
    },
    "resume": {
        "NAME": "名称", "CONT": "国籍", "RACE": "民族", "TITLE": "职位", "EDU": "学历",
        "ORG": "公司", "PRO": "专业", "LOC": "籍贯",
    },
    "cluener": {
        "name": "名称", "company": "公司", "game": "游戏", "organization": "组织", "movie": "电影",
        "address": "地点", "position": "职位", "government": "政府", "scene": "景点", "book": "书籍",
    },
    "ccks2021": {
        "prov": "省份", "city": "城市", "district": "区", "town": "街道", "community": "社区",
        "poi": "兴趣点", "road": "路", "roadno": "路号", "subpoi": "次兴趣点", "devzone": "产业园",
        "houseno": "楼号", "intersection": "路口", "assist": "方位", "cellno": "单元",
        "floorno": "楼层", "distance": "距离", "village_group": "村组",
    },
    "weibo": {
        "PER.NAM": "名称", "PER.NOM": "人称泛指", "GPE.NAM": "地缘政治实体",
        "GPE.NOM": "地缘政治实体泛指", "LOC.NAM": "地点", "LOC.NOM": "地点泛指",
        "ORG.NAM": "组织", "ORG.NOM": "组织泛指",
    },
    "peoples_daily_1998": dict(_PEOPLES_DAILY),
}

# Read-only view so no caller can change the registry by accident.
TYPE_NAMES: types.MappingProxyType = types.MappingProxyType(
    {ds: types.MappingProxyType(m) for ds, m in _TYPE_NAMES.items()})


def _unique(names):
  return tuple(dict.fromkeys(names))


# The 37 unique prompt names over the paper's eight datasets, in first-seen order.
PAPER_PROMPT_NAMES: tuple[str, ...] = _unique(
    n for ds in PAPER_DATASETS for n in _TYPE_NAMES[ds].values())
# Every prompt name any registered dataset uses (the 37 plus Weibo's nominal types).
ALL_PROMPT_NAMES: tuple[str, ...] = _unique(
    n for ds in DATASETS for n in _TYPE_NAMES[ds].values())

# OntoNotes evaluation in the paper maps GPE and LOC to 地点; we keep GPE as its own prompt
# during training (as the paper's Table 6 does) and offer this merge for evaluation only.
ONTONOTES_EVAL_MERGE = types.MappingProxyType({"地缘政治实体": "地点"})


def check_dataset(name: str) -> str:
  """Returns `name` if it is a registered dataset, else raises a ValueError listing them."""
  if name not in _TYPE_NAMES:
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
  return name


def raw_types(dataset: str) -> tuple[str, ...]:
  """Raw labels of `dataset`, in prompt order."""
  return tuple(_TYPE_NAMES[check_dataset(dataset)])


def prompt_names(dataset: str) -> tuple[str, ...]:
  """Chinese prompt names of `dataset`'s types, in prompt order (no duplicates)."""
  return _unique(_TYPE_NAMES[check_dataset(dataset)].values())


def prompt_name(dataset: str, raw_type: str) -> str:
  """Maps a raw label of `dataset` to its prompt name; unknown labels raise a ValueError."""
  mapping = _TYPE_NAMES[check_dataset(dataset)]
  try:
    return mapping[raw_type]
  except KeyError:
    raise ValueError(f"dataset {dataset!r} has no entity type {raw_type!r}; "
                     f"its types are: {', '.join(mapping)}") from None
