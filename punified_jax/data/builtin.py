"""The built-in corpus: seeded, generated Chinese NER sentences in every release format.

Why: a fresh machine has no data downloads, yet the readers, SeqIO tasks, trainer and the main
job must run end to end. This module invents sentences from templates and our own lexicons
(`lexicon.py`) and writes them into a directory laid out exactly like a download root, each
dataset in its release format and file names, so the real readers read it. It exercises the
pipeline and is NOT a benchmark; a tiny model should still learn it, since entities come from
lexicons and sit in consistent contexts.

    generate_dataset("resume", "train", 240, seed=0)  -> list[Example] (raw type labels)
    write_corpus(out_dir, seed=0)                      -> out_dir (all ten datasets)
    builtin_corpus_dir(seed=0)                         -> a cached copy, written once

Templates are strings with slots in braces:
  `{city}`      a phrase from lexicon `city`; it is an entity when the dataset maps the lexicon
                to one of its raw types (`LEXICON_TYPES`), plain text otherwise;
  `{person#a}`  slots with the same `#a` label repeat one drawn phrase (a repeated mention);
  `{|甲|乙}`     one of the alternatives, as plain text.

Held-out splits: MSRA, Boson and the People's Daily corpora have no dev file in their release
formats; readers make the paper's held-out splits with a seeded sample (2000 sentences on real
data). For this corpus the file holds train + held-out sentences and `BUILTIN_CORPUS.json` at
the root records the held-out sizes the reader should use (`held_out_sizes`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import tempfile
from typing import Iterable, Mapping, Optional, Sequence

from punified_jax import entity_types
from punified_jax.data import lexicon
from punified_jax.data.example import Example, Span

# Bump when the generator's output changes on purpose; the cache directory name also carries a
# digest of this module and lexicon.py, so an edited generator never reuses a stale cache.
BUILTIN_VERSION = 1
MARKER_FILE = "BUILTIN_CORPUS.json"
MARKER_NOTE = "synthetic corpus for exercising the pipeline, not a benchmark"
# Sentences per split. Small enough that the whole corpus is written in about a second.
DEFAULT_SIZES: Mapping[str, int] = {"train": 240, "validation": 60, "test": 60}
# Sentences per held-out split (validation, and test where the release has none) that a reader
# should sample from the single release file of MSRA / Boson / People's Daily. Equal to the
# default dev size so every dataset's validation split has the same size.
BUILTIN_HELD_OUT = DEFAULT_SIZES["validation"]
MIN_CHARS, MAX_CHARS = 10, 80

# Folder of each dataset inside a download root.
DATASET_DIRS: Mapping[str, str] = {
    "ecommerce": "ecommerce", "msra": "msra", "ontonotes4": "ontonotes4",
    "peoples_daily": "peoples_daily_2014", "boson": "boson", "resume": "resume",
    "cluener": "cluener2020", "ccks2021": "ccks2021_address", "weibo": "weibo",
    "peoples_daily_1998": "peoples_daily_1998",
}
# Splits whose sentences are written to one file and held out by the reader; the release has a
# separate file for every other split (MSRA has a test file but no dev file).
HELD_OUT_SPLITS: Mapping[str, tuple[str, ...]] = {
    "msra": ("validation",),
    "boson": ("validation", "test"),
    "peoples_daily": ("validation", "test"),
    "peoples_daily_1998": ("validation", "test"),
}
# Splits each dataset's release has (CCKS2021 publishes no labelled test; ours neither).
DATASET_SPLITS: Mapping[str, tuple[str, ...]] = {
    ds: ("train", "validation") if ds == "ccks2021" else ("train", "validation", "test")
    for ds in entity_types.DATASETS
}

# ----------------------------------------------------------------------------- type mapping

_MSRA_LIKE = {
    "person": "PER", "country": "LOC", "province": "LOC", "city": "LOC", "district": "LOC",
    "natural": "LOC", "scene": "LOC", "org": "ORG", "club": "ORG", "university": "ORG",
    "gov": "ORG", "company": "ORG", "ascii_company": "ORG", "media": "ORG",
}
_TITLE_LEXICONS = ("title", "corp_title", "gov_title", "pro_title", "sports_title", "film_title")
# Lexicon -> raw type, per dataset; a lexicon a dataset does not map is plain text there (MSRA
# does not annotate times, so `{time}` is an entity in People's Daily and plain text in MSRA).
LEXICON_TYPES: Mapping[str, Mapping[str, str]] = {
    "resume": {
        "person": "NAME", "citizenship": "CONT", "ethnic": "RACE", "degree": "EDU",
        "company": "ORG", "university": "ORG", "org": "ORG", "major": "PRO", "hometown": "LOC",
        **{name: "TITLE" for name in _TITLE_LEXICONS},
    },
    "ontonotes4": {
        "person": "PER", "country": "GPE", "province": "GPE", "city": "GPE", "district": "GPE",
        "natural": "LOC", "scene": "LOC", "org": "ORG", "club": "ORG", "university": "ORG",
        "gov": "ORG", "company": "ORG", "ascii_company": "ORG", "media": "ORG",
    },
    "msra": dict(_MSRA_LIKE),
    "peoples_daily": dict(_MSRA_LIKE, time="T"),
    "peoples_daily_1998": dict(_MSRA_LIKE, time="T"),
    "boson": {
        "product": "product_name", "time": "time", "person": "person_name", "org": "org_name",
        "club": "org_name", "university": "org_name", "gov": "org_name", "media": "org_name",
        "country": "location", "province": "location", "city": "location",
        "district": "location", "natural": "location", "scene": "location",
        "company": "company_name", "ascii_company": "company_name",
    },
    "cluener": {
        "person": "name", "company": "company", "ascii_company": "company", "game": "game",
        "org": "organization", "club": "organization", "university": "organization",
        "media": "organization", "movie": "movie", "address": "address", "city": "address",
        "province": "address", "gov": "government", "scene": "scene", "book": "book",
        **{name: "position" for name in _TITLE_LEXICONS},
    },
    "ecommerce": {"brand": "HP", "ascii_brand": "HP", "commodity": "HC"},
    "ccks2021": {
        "prov": "prov", "addr_city": "city", "addr_district": "district", "town": "town",
        "community": "community", "village": "community", "village_group": "village_group",
        "road": "road", "roadno": "roadno", "poi": "poi", "subpoi": "subpoi", "devzone": "devzone",
        "houseno": "houseno", "village_houseno": "houseno", "cellno": "cellno",
        "floorno": "floorno", "assist": "assist", "distance": "distance",
        "intersection": "intersection",
    },
    "weibo": {
        "person": "PER.NAM", "person_nom": "PER.NOM", "country": "GPE.NAM", "province": "GPE.NAM",
        "city": "GPE.NAM", "gpe_nom": "GPE.NOM", "natural": "LOC.NAM", "scene": "LOC.NAM",
        "loc_nom": "LOC.NOM", "org": "ORG.NAM", "club": "ORG.NAM", "university": "ORG.NAM",
        "company": "ORG.NAM", "gov": "ORG.NAM", "media": "ORG.NAM", "org_nom": "ORG.NOM",
    },
}

# ----------------------------------------------------------------------------- templates

# News sentences: OntoNotes, MSRA, both People's Daily corpora, and (those that end in one
# sentence ender) Boson. Literal text carries no time words, since People's Daily would tag them.
NEWS_TEMPLATES = (
    "{time}，{gov}在{city}召开新闻发布会，介绍有关情况。",
    "{person}表示，{country}愿同各方一道，推动地区和平与发展。",
    "据{media}报道，{city}的{company}{time}宣布扩大生产规模。",
    "{person#a}在讲话中指出，{org}将继续加强合作，{person#a}对此充满信心。",
    "{country}{|总统|总理|外长|副总理}{person}{time}抵达{city}，开始为期三天的访问。",
    "记者从{gov}获悉，{province}共有{num}个项目获得资助。",
    "{natural}的{city}、{city}等地出现强降雨天气。",
    "{|会议|座谈会|研讨会}强调，要{|坚持稳中求进|深化改革开放|加强科技创新}，切实做好各项工作。",
    "这次活动共吸引了{num}多名群众参加，气氛十分热烈。",
    "{org}的专家认为，{natural}地区的生态保护仍面临不少挑战。",
    "{person}是{city}人，曾在{university}学习多年。",
    "{time}，{company}与{university}签署了战略合作协议。",
    "“{city}的变化太大了！”{person}感慨地说。",
    "{person}（{country}）以{num}分的成绩夺得冠军。",
    "{media}消息：{city}地铁{num}号线将于{time}开通运营。",
    "{company}董事长{person}说，公司计划在{country}设立分支机构。",
    "在{city}举行的{org}年会上，{person}当选为新一届主席。",
    "{gov}发布通知，要求各地做好{natural}的防汛工作。",
    "截至{time}，{province}累计接待游客{num}万人次。",
    "{person#a}告诉记者，这是{person#a}第{num}次来到{city}。",
    "他说，这些成绩的取得来之不易，值得认真总结。",
    "{country}和{country}两国外长{time}在{city}举行会谈。",
    "{org}、{gov}等单位的代表出席了开幕式。",
    "《{book}》一书由{person}撰写，由{media}出版。",
    "{company}与{ascii_company}在{city}联合发布新一代芯片。",
    "{scene}景区{time}接待游客{num}万人次，同比增长{pct}。",
    "{city}经济增速达到{pct},高于预期。",
    "{person}说:“{city}欢迎各地的朋友。”",
    "{gov}{gov_title}{person}{time}来到{district}看望慰问困难群众。",
    "{person}和{person}分别担任{org}的正、副主席。",
    "{club}{time}在{city}举行新赛季誓师大会。",
    "{|此外|同时|另外}，有关部门还将出台{num}项新举措。",
    "{natural}是{province}重要的生态屏障。",
    "{time}，{person}在{university}作了题为《{book}》的报告。",
)

BOSON_TEMPLATES = (
    "{time}，{person}在{city}的{company}门店买了一台{product}。",
    "{company}{time}发布了新款{product}，售价{num}元。",
    "{product}的续航表现怎么样？",
    "{person}说，{product}用起来很顺手。",
    "{org}的研究人员{time}在{natural}附近开展了野外考察。",
    "{person#a}认为{company}的{product}性价比很高，{person#a}已经推荐给了朋友。",
    "这家店的{|服务态度|物流速度|包装}{|很好|不错|一般}，下次{|还会再来|再看看吧}！",
    "{time}起，{city}的{company}将对{product}进行促销！",
    "{person}是{university}的老师，{time}刚刚出版了新书。",
    "{gov}{time}发布公告，{city}部分路段将实行交通管制。",
)

RESUME_TEMPLATES = (
    "{person}，{|男|女}，{citizenship}，无境外永久居留权。",
    "{person}女士，{birth_year}年出生，{citizenship}，{ethnic}，{degree}学历。",
    "{person}先生：{degree}，{pro_title}，现任{company}{corp_title}。",
    "{person}，{hometown}人，{degree}，毕业于{university}{major}专业。",
    "历任{company}{corp_title}、{corp_title}，{company}{corp_title}等职。",
    "{work_year}年{month}月至今担任{company}{corp_title}。",
    "曾就读于{university}，获{major}{degree}学位。",
    "{person}同志，{ethnic}，籍贯{hometown}，{degree}，{title}。",
    "具有丰富的{|企业管理|财务管理|项目管理|人力资源}经验和较强的组织协调能力。",
    "{person}：{citizenship}，{degree}，{title}，具有{|高级|中级}职称。",
    "现兼任{org}理事、{company}{corp_title}。",
    "{person}，{degree}，{work_year}年加入{company}，任{corp_title}。",
    "本公司{corp_title}{person#a}先生，{age}岁，{person#a}先生具有多年行业经验。",
    "{person}({ascii_name})，{citizenship}，{degree}，{major}专业。",
    "{work_year}年至{work_year}年在{org}从事研究工作，任{pro_title}。",
    "{person}，{|男|女}，{ethnic}，{gov_title}，{degree}学历，{major}专业。",
)

# Product titles and questions; Ecommerce is the one dataset with spaces inside its text.
ECOMMERCE_TEMPLATES = (
    "{brand} {commodity} 女 夏季新款 宽松显瘦",
    "{brand}{commodity}正品包邮 {num}元",
    "{brand}官方旗舰店 {commodity} 限时特价{num}元",
    "这款{commodity}是{brand}的吗？质量怎么样",
    "{brand#a}{commodity}和{brand#a}{commodity}哪个好用",
    "{commodity}推荐，学生党平价{commodity}",
    "{brand} {model} {commodity}，{num}小时续航，支持快充",
    "买{commodity}送{commodity} 买一送一 {brand}",
    "{brand}（{ascii_brand}）{commodity} 2024新款",
    "适合送女朋友的{commodity}有哪些",
    "包邮 {commodity} 加厚 保暖 冬季 {commodity}",
    "{brand}的{commodity}比{brand}的便宜多少",
    "{|今天下单明天发货|满99元包邮}，七天无理由退换。",
    "{commodity}怎么挑选才不会踩坑",
    "{brand} {ascii_brand} {commodity} 套装 {num}件",
)

CLUENER_TEMPLATES = (
    "{person}主演的电影《{movie}》将于{month}月上映。",
    "《{game}》是{company}推出的一款角色扮演游戏。",
    "{company}{corp_title}{person}透露，公司将在{city}开设新门店。",
    "{person#a}在接受采访时说，《{book}》是{person#a}最喜欢的一本书。",
    "{gov}近日发布通知，{address}的部分道路将临时封闭。",
    "周末可以去{scene}走走，那里的风景非常美。",
    "{club}{sports_title}{person}表示，本赛季目标是进入前三。",
    "玩家在《{game#g}》中可以自由探索，{company}表示《{game#g}》还会推出新版本。",
    "据{gov}统计，{address}今年已新建学校{num}所。",
    "{person}的新书《{book}》在{city}举行首发式。",
    "{|今年|去年|国庆期间}{scene}的游客数量比往年增长了{pct}。",
    "{company}({ascii_company})发布了第三季度财报。",
    "电影《{movie}》的{film_title}{person}曾在{university}学习过{|表演|导演|摄影}。",
    "{address}发生一起交通事故，{gov}已介入调查。",
    "很多人认为这部作品的结局有些仓促，但整体{|还不错|值得一看}。",
    "{person}，{org}{pro_title}，长期从事青少年教育工作。",
    "{province}{gov}联合{org}举办了《{game}》电竞邀请赛。",
)

WEIBO_TEMPLATES = (
    "今天和{person_nom}一起去{loc_nom}散步，心情超好[哈哈]",
    "@{nick}：在{city}的第一天，{scene}人真的好多啊！",
    "{person}的新歌太好听了，单曲循环一整天",
    "我们{org_nom}今天发福利了，{person_nom}们都很开心",
    "{gpe_nom}的发展越来越好了，为{country}点赞！",
    "#{city}美食#推荐一家{loc_nom}旁边的小店，味道绝了",
    "{org}官方发布：{time}起{city}部分地区停水",
    "{person#a}加油！{person#a}一定可以的！！",
    "刚刚在{company}面试完，{person_nom}说等通知，好紧张",
    "转发这条微博，希望大家都能看到。",
    "{person_nom}说{natural}的风景特别美，明年一定要去看看",
    "周末回{gpe_nom}看{person_nom}，{loc_nom}还是老样子",
    "{org_nom}组织我们去{scene}团建，玩得很开心～",
    "{university}的樱花开了，{person_nom}约我去拍照[心]",
    "{|好困啊|下雨了|又是加班的一天}，{|想回家|想吃火锅|想放假}了[泪]",
)

# Postal addresses (CCKS2021): chains of address parts, most without punctuation.
ADDRESS_TEMPLATES = (
    "{prov}{addr_city}{addr_district}{town}{road}{roadno}{poi}{houseno}{cellno}{room}",
    "{addr_city}{addr_district}{road}{roadno}{poi}{subpoi}",
    "{prov}{addr_city}{addr_district}{devzone}{road}{roadno}",
    "{addr_district}{town}{village}{village_group}{village_houseno}",
    "{addr_city}{road}与{road}{intersection}{assist}{poi}",
    "{addr_district}{poi}{assist}{distance}",
    "{prov}{addr_city}{addr_district}{town}{community}{poi}{houseno}{floorno}",
    "收货地址：{addr_city}{addr_district}{road}{roadno}{poi}（{subpoi}）{floorno}",
    "{town}{road}{roadno}{poi}{houseno}{cellno}{floorno}{room}",
    "{addr_city}{devzone}{poi}{subpoi}{houseno}",
    "{prov}{addr_city}{addr_district}{road}{roadno}{assist}",
    "{addr_district}{town}{community}{poi}{houseno}{cellno}{room}，{|请放门卫|电话联系|工作日送货}",
    "{addr_city}{addr_district}{poi}{assist}的{poi}",
    "{prov}{addr_city}{town}{village}{village_group}",
    "{|请放在门卫室，谢谢！|周末不在家，请放快递柜|送货前请先电话联系}",
    "{road}{roadno}{poi}{houseno}{floorno}(近{road}{intersection})",
    "{addr_district}{road#r}{roadno}{poi}（{road#r}{intersection}{assist}）",
)

TEMPLATE_POOLS: Mapping[str, tuple[str, ...]] = {
    "news": NEWS_TEMPLATES, "boson": BOSON_TEMPLATES, "resume": RESUME_TEMPLATES,
    "ecommerce": ECOMMERCE_TEMPLATES, "cluener": CLUENER_TEMPLATES, "weibo": WEIBO_TEMPLATES,
    "address": ADDRESS_TEMPLATES,
}
DATASET_POOLS: Mapping[str, tuple[str, ...]] = {
    "resume": ("resume",), "ontonotes4": ("news",), "msra": ("news",),
    "peoples_daily": ("news",), "peoples_daily_1998": ("news",), "boson": ("news", "boson"),
    "cluener": ("cluener",), "ecommerce": ("ecommerce",), "ccks2021": ("address",),
    "weibo": ("weibo",),
}

# Boson paragraphs are split into sentences by the reader after these characters (soft enders
# only in long sentences); a Boson sentence has exactly one, at its end.
BOSON_ENDERS = frozenset("。！？")
BOSON_BREAKERS = frozenset("。！？!?；;…")
# Datasets written as segmented words where two neighbouring mentions of one type would read
# back as one: People's Daily joins neighbouring nr words (surname + given name) and t words
# (the parts of a date). MSRA marks every word, so neighbours stay apart there.
_WORD_FORMATS = frozenset({"peoples_daily_1998"})
# Characters the release formats cannot carry inside their text (beyond whitespace).
_FORBIDDEN = {
    "boson": frozenset("{}"),
    "msra": frozenset("/"),
    "peoples_daily_1998": frozenset("/[]"),
}

@dataclasses.dataclass(frozen=True)
class _Slot:
  lexicon: Optional[str] = None
  binding: Optional[str] = None
  choices: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Template:
  source: str
  parts: tuple[str | _Slot, ...]

  def slots(self) -> list[_Slot]:
    return [p for p in self.parts if isinstance(p, _Slot)]

  def types(self, dataset: str) -> frozenset[str]:
    """Raw types every realisation of this template contains in `dataset`."""
    mapping = LEXICON_TYPES[dataset]
    return frozenset(mapping[s.lexicon] for s in self.slots() if s.lexicon in mapping)


_SLOT_RE = re.compile(r"\{([^{}]*)\}")


def parse_template(source: str) -> Template:
  """Parses the slot syntax described in the module docstring; unknown lexicons raise."""
  parts: list[str | _Slot] = []
  pos = 0
  for match in _SLOT_RE.finditer(source):
    if match.start() > pos:
      parts.append(source[pos:match.start()])
    body = match.group(1)
    if body.startswith("|"):
      parts.append(_Slot(choices=tuple(body[1:].split("|"))))
    else:
      name, _, binding = body.partition("#")
      if name not in lexicon.LEXICONS:
        raise ValueError(f"template {source!r}: unknown lexicon {name!r}")
      parts.append(_Slot(lexicon=name, binding=binding or None))
    pos = match.end()
  if pos < len(source):
    parts.append(source[pos:])
  if any(isinstance(p, str) and ("{" in p or "}" in p) for p in parts):
    raise ValueError(f"template {source!r}: unbalanced braces")
  return Template(source, tuple(parts))


def _eligible(template: Template, dataset: str) -> bool:
  """Whether `template` can be written in `dataset`'s release format without changing meaning."""
  mapping = LEXICON_TYPES[dataset]
  if dataset == "boson":
    literal = "".join(p if isinstance(p, str) else "".join(p.choices) for p in template.parts)
    last = template.parts[-1]
    if not (isinstance(last, str) and last[-1] in BOSON_ENDERS):
      return False
    if sum(ch in BOSON_BREAKERS for ch in literal) != 1:
      return False
  if dataset in _WORD_FORMATS:
    for left, right in zip(template.parts, template.parts[1:]):
      if (isinstance(left, _Slot) and isinstance(right, _Slot)
          and left.lexicon in mapping and mapping.get(left.lexicon) == mapping.get(right.lexicon)):
        return False
  return True


def templates_for(dataset: str) -> list[Template]:
  """The templates `dataset` draws from, after its format's eligibility filter."""
  entity_types.check_dataset(dataset)
  parsed = [parse_template(t) for pool in DATASET_POOLS[dataset] for t in TEMPLATE_POOLS[pool]]
  return [t for t in parsed if _eligible(t, dataset)]


# ----------------------------------------------------------------------------- generation

@dataclasses.dataclass(frozen=True)
class Piece:
  """A stretch of a generated sentence: an entity (`type` set) or plain text.

  `words` is the phrase's segmentation with parts of speech (None for literal template text,
  which `segment` splits when a word-segmented format needs it).
  """
  text: str
  type: Optional[str] = None
  words: Optional[lexicon.Phrase] = None


@dataclasses.dataclass(frozen=True)
class Sentence:
  pieces: tuple[Piece, ...]

  @property
  def text(self) -> str:
    return "".join(p.text for p in self.pieces)

  def example(self) -> Example:
    spans = []
    offset = 0
    for piece in self.pieces:
      if piece.type is not None:
        spans.append(Span(offset, offset + len(piece.text), piece.type))
      offset += len(piece.text)
    return Example(self.text, spans).validate()


_MAX_REDRAWS = 10


def _realise(template: Template, dataset: str, rng: random.Random) -> Sentence:
  mapping = LEXICON_TYPES[dataset]
  ctx = {"fullwidth": dataset == "peoples_daily_1998"}
  bound: dict[str, lexicon.Phrase] = {}
  drawn: set[tuple[str, str]] = set()  # (lexicon, text) of unbound draws, kept distinct
  pieces = []
  for part in template.parts:
    if isinstance(part, str):
      pieces.append(Piece(part))
    elif part.choices:
      pieces.append(Piece(rng.choice(part.choices)))
    else:
      if part.binding is not None and part.binding in bound:
        phrase = bound[part.binding]
      else:
        # Two unbound slots of one lexicon name different things ("阿根廷和阿根廷" reads as
        # an error); a few redraws suffice since every lexicon has many entries.
        for _ in range(_MAX_REDRAWS):
          phrase = lexicon.draw(part.lexicon, rng, ctx)
          if (part.lexicon, lexicon.text_of(phrase)) not in drawn:
            break
        drawn.add((part.lexicon, lexicon.text_of(phrase)))
        if part.binding is not None:
          bound[part.binding] = phrase
      pieces.append(Piece(lexicon.text_of(phrase), mapping.get(part.lexicon), phrase))
  return Sentence(tuple(p for p in pieces if p.text))


def sentence_problem(sentence: Sentence, dataset: str) -> Optional[str]:
  """Why `sentence` cannot be written in `dataset`'s release format, or None when it can."""
  text = sentence.text
  if not MIN_CHARS <= len(text) <= MAX_CHARS:
    return f"length {len(text)} outside {MIN_CHARS}..{MAX_CHARS}"
  if any(ch in "\t\n\r\u3000" for ch in text):
    return "tab, newline or ideographic space in text"
  if " " in text:
    if dataset != "ecommerce":
      return "space in a format that cannot carry one"
    if text != text.strip(" ") or any(" " in p.text for p in sentence.pieces if p.type):
      return "space at the edge of the text or inside an entity"
  if any(ch in _FORBIDDEN.get(dataset, ()) for ch in text):
    return "a character the release format reserves"
  if dataset == "boson":
    if text[-1] not in BOSON_ENDERS or sum(ch in BOSON_BREAKERS for ch in text) != 1:
      return "a Boson sentence must end in its one sentence ender"
  if dataset in _WORD_FORMATS:
    for left, right in zip(sentence.pieces, sentence.pieces[1:]):
      if left.type is not None and left.type == right.type:
        return f"two neighbouring {left.type} mentions would read back as one"
  return None


def _split_key(split: str) -> str:
  if split == "dev":
    return "validation"
  if split not in ("train", "validation", "test"):
    raise ValueError(f"unknown split {split!r}; use train, validation (or dev) or test")
  return split


# Attempts to realise one template within the length and format rules before giving up: every
# template passes within a handful, so running out means a broken template, not bad luck.
_MAX_ATTEMPTS = 200


def generate_sentences(dataset: str, split: str, n: int, seed: int) -> list[Sentence]:
  """`n` sentences for `dataset`/`split`, deterministic in (dataset, split, seed).

  In the train split every raw type of the dataset appears (when `n` is at least the number of
  types): templates are first picked among those carrying a still-missing type.
  """
  entity_types.check_dataset(dataset)
  split = _split_key(split)
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  # A string seed is hashed with SHA-512 by `random`, so the stream is the same on every
  # machine and Python run (unlike hash()).
  rng = random.Random(f"punified_jax.builtin/v{BUILTIN_VERSION}/{seed}/{dataset}/{split}")
  pool = templates_for(dataset)
  missing = set(entity_types.raw_types(dataset)) if split == "train" else set()
  sentences = []
  while len(sentences) < n:
    candidates = [t for t in pool if t.types(dataset) & missing] if missing else pool
    template = rng.choice(candidates or pool)
    for _ in range(_MAX_ATTEMPTS):
      sentence = _realise(template, dataset, rng)
      if sentence_problem(sentence, dataset) is None:
        break
    else:
      raise RuntimeError(f"template {template.source!r} gave no valid {dataset} sentence in "
                         f"{_MAX_ATTEMPTS} attempts; last problem: "
                         f"{sentence_problem(sentence, dataset)}")
    sentences.append(sentence)
    missing -= template.types(dataset)
  # Coverage picks come first; shuffle so no file starts with a block of them.
  rng.shuffle(sentences)
  return sentences


def generate_dataset(dataset: str, split: str, n: int, seed: int) -> list[Example]:
  """`n` Examples of `dataset` (raw type labels) for `split` (train / validation|dev / test)."""
  return [s.example() for s in generate_sentences(dataset, split, n, seed)]


# ----------------------------------------------------------------------------- segmentation

_FULLWIDTH_DIGITS = frozenset("０１２３４５６７８９")
_NUMBER_TAIL = frozenset(".．%％")


def _is_digit(ch: str) -> bool:
  return ch.isascii() and ch.isdigit() or ch in _FULLWIDTH_DIGITS


def _is_ascii_letter(ch: str) -> bool:
  return ch.isascii() and ch.isalpha()


def segment(text: str, *, strict: bool = False) -> list[lexicon.Word]:
  """Splits plain text into (word, part of speech) by our own simple rule.

  Punctuation is a word (`w`); a run of digits (with . or %) is a numeral (`m`); a run of
  ASCII letters, digits, `-` and `_` that starts with a letter is a foreign string (`nx`);
  Chinese text is cut by forward maximum matching on `lexicon.WORD_POS` (words up to 6
  characters). A character no listed word starts with becomes a 2-character word (`n`) with
  its neighbour (1 character at a boundary); with `strict` it raises a ValueError instead, so a
  test can prove that a template's text is fully covered by the table.
  """
  words: list[lexicon.Word] = []
  i = 0
  n = len(text)
  while i < n:
    ch = text[i]
    if _is_digit(ch):
      j = i + 1
      while j < n and (_is_digit(text[j]) or text[j] in _NUMBER_TAIL):
        j += 1
      words.append((text[i:j], "m"))
      i = j
      continue
    if _is_ascii_letter(ch):
      j = i + 1
      while j < n and (text[j].isascii() and (text[j].isalnum() or text[j] in "-_")):
        j += 1
      words.append((text[i:j], "nx"))
      i = j
      continue
    if ch in lexicon.PUNCTUATION:
      words.append((ch, "w"))
      i += 1
      continue
    for length in range(min(6, n - i), 0, -1):
      pos = lexicon.WORD_POS.get(text[i:i + length])
      if pos is not None:
        words.append((text[i:i + length], pos))
        i += length
        break
    else:
      if strict:
        raise ValueError(f"no word in lexicon.WORD_POS starts at {text[i:]!r} (in {text!r})")
      j = i + 1
      if (j < n and not _is_digit(text[j]) and not text[j].isascii()
          and text[j] not in lexicon.PUNCTUATION and text[j] not in lexicon.WORD_POS):
        j += 1
      words.append((text[i:j], "n"))
      i = j
  return words


def _plain_pos(word: str) -> str:
  """Part of speech for a word of a plain (non-entity) lexicon phrase that has none."""
  if all(_is_digit(c) or c in _NUMBER_TAIL for c in word):
    return "m"
  if word.isascii():
    return "nx"
  return lexicon.WORD_POS.get(word, "n")


# People's Daily tags that the reader turns into entities; plain words must never carry them.
_PD_ENTITY_POS = {"PER": "nr", "LOC": "ns", "ORG": "nt", "T": "t"}


def _plain_words(piece: Piece) -> list[lexicon.Word]:
  if piece.words is None:
    return segment(piece.text)
  words = [(w, pos or _plain_pos(w)) for w, pos in piece.words]
  # A plain phrase keeps its words but loses any entity tag (e.g. a time in MSRA text).
  return [(w, "n" if pos in ("nr", "ns", "nt", "t") else pos) for w, pos in words]


# ----------------------------------------------------------------------------- writers

def char_tags(example: Example, scheme: str) -> list[str]:
  """One tag per character of `example.text` in `scheme` (BIO, BIOES, BMES or BIES)."""
  if scheme not in ("BIO", "BIOES", "BMES", "BIES"):
    raise ValueError(f"unknown tagging scheme {scheme!r}")
  tags = ["O"] * len(example.text)
  inside = "M" if scheme == "BMES" else "I"
  for span in example.spans:
    if any(t != "O" for t in tags[span.start:span.end]):
      raise ValueError(f"overlapping spans in {example.text!r}")
    length = span.end - span.start
    if scheme == "BIO":
      tags[span.start:span.end] = [f"B-{span.type}"] + [f"I-{span.type}"] * (length - 1)
    elif length == 1:
      tags[span.start] = f"S-{span.type}"
    else:
      tags[span.start:span.end] = ([f"B-{span.type}"] + [f"{inside}-{span.type}"] * (length - 2)
                                   + [f"E-{span.type}"])
  return tags


def format_char_tag_lines(example: Example, scheme: str, sep: str) -> list[str]:
  """`char<sep>tag` lines of one sentence; a space character is an empty char field (`\\tO`)."""
  lines = []
  for ch, tag in zip(example.text, char_tags(example, scheme)):
    if ch.isspace() and ch != " ":
      raise ValueError(f"whitespace {ch!r} cannot be written as a character line")
    lines.append(f"{'' if ch == ' ' else ch}{sep}{tag}")
  return lines


def format_char_tag_file(examples: Iterable[Example], scheme: str, sep: str, *,
                         final_blank: bool = True) -> str:
  """A one-character-per-line file: sentences separated by a blank line.

  `final_blank`: also end the file with a blank line, as Resume/OntoNotes/Ecommerce/Weibo do
  (the CCKS2021 files end right after the last character line).
  """
  blocks = ["\n".join(format_char_tag_lines(ex, scheme, sep)) + "\n" for ex in examples]
  return "\n".join(blocks) + ("\n" if final_blank and blocks else "")


def _sentence_words(sentence: Sentence) -> list[tuple[lexicon.Phrase, Optional[str]]]:
  """The sentence as (words, entity type or None) groups: each entity is one group."""
  groups = []
  for piece in sentence.pieces:
    if piece.type is None:
      groups.extend(((w,), None) for w in _plain_words(piece))
    else:
      groups.append((piece.words or lexicon.one_word(piece.text), piece.type))
  return groups


def format_weibo_lines(sentence: Sentence) -> list[str]:
  """`char<digit>\\ttag` lines (BIO): the digit is the character's position in its word."""
  example = sentence.example()
  tags = char_tags(example, "BIO")
  digits = []
  for words, _ in _sentence_words(sentence):
    for word, _ in words:
      # One digit only: the reader strips exactly one trailing character.
      digits.extend(str(min(k, 9)) for k in range(len(word)))
  if len(digits) != len(example.text):
    raise AssertionError("segmentation does not cover the text")
  return [f"{ch}{d}\t{tag}" for ch, d, tag in zip(example.text, digits, tags)]


_MSRA_TAGS = {"PER": "nr", "LOC": "ns", "ORG": "nt"}


def format_msra_line(sentence: Sentence) -> str:
  """`word/tag` tokens separated by one space (and a trailing space, as the release has);
  an entity is one whole word tagged nr/ns/nt, other words `o`."""
  tokens = []
  for words, entity in _sentence_words(sentence):
    text = lexicon.text_of(words)
    tokens.append(f"{text}/{_MSRA_TAGS[entity] if entity else 'o'}")
  return " ".join(tokens) + " "


def format_cluener_line(example: Example, *, labeled: bool = True, index: int = 0) -> str:
  """A CLUENER JSON line: {"text", "label": {type: {mention: [[start, end_inclusive], ...]}}};
  an unlabeled (test) line is {"id", "text"}."""
  if not labeled:
    return json.dumps({"id": index, "text": example.text}, ensure_ascii=False)
  label: dict[str, dict[str, list[list[int]]]] = {}
  for span in example.spans:
    mention = span.text_in(example.text)
    label.setdefault(span.type, {}).setdefault(mention, []).append([span.start, span.end - 1])
  return json.dumps({"text": example.text, "label": label}, ensure_ascii=False)


def format_boson_paragraph(examples: Sequence[Example]) -> str:
  """Several sentences joined into one paragraph line with inline `{{type:text}}` markup."""
  out = []
  for ex in examples:
    pos = 0
    for span in ex.spans:
      out.append(ex.text[pos:span.start])
      out.append("{{" + span.type + ":" + span.text_in(ex.text) + "}}")
      pos = span.end
    out.append(ex.text[pos:])
  return "".join(out)


def format_pd2014_lines(example: Example) -> tuple[str, str]:
  """(source line, target line): space-separated characters and `B_LOC`-style BIO tags."""
  tags = [t.replace("-", "_", 1) for t in char_tags(example, "BIO")]
  return " ".join(example.text), " ".join(tags)


def format_pd1998_tokens(sentence: Sentence) -> list[str]:
  """`word/pos` tokens of one paragraph (without the document id).

  A person is surname/nr + given-name/nr, a time is its t words; a one-word place or
  organisation is ns/nt, a multi-word one is a bracketed compound `[w/pos  w/pos]ns`.
  """
  tokens = []
  for words, entity in _sentence_words(sentence):
    if entity is None:
      (word, pos), = words
      tokens.append(f"{word}/{pos}")
    elif entity in ("PER", "T") or len(words) == 1:
      tag = _PD_ENTITY_POS[entity]
      tokens.extend(f"{word}/{tag}" for word, _ in words)
    else:
      inner = [f"{word}/{pos or _plain_pos(word)}" for word, pos in words]
      inner[0] = "[" + inner[0]
      inner[-1] += "]" + _PD_ENTITY_POS[entity]
      tokens.extend(inner)
  return tokens


def _gzip_bytes(data: bytes) -> bytes:
  """gzip with no file name and mtime 0, so the same corpus gives byte-identical files."""
  buffer = io.BytesIO()
  with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
    gz.write(data)
  return buffer.getvalue()


def _write_text(path: str, text: str):
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write(text)


def _release_files(dataset: str, splits: Mapping[str, list[Sentence]],
                   rng: random.Random) -> dict[str, bytes]:
  """File name (inside the dataset folder) -> contents, in the dataset's release format."""
  ex = {split: [s.example() for s in sents] for split, sents in splits.items()}
  release = {"train": "train", "validation": "dev", "test": "test"}
  files: dict[str, str] = {}
  if dataset in ("resume", "ontonotes4"):
    for split, examples in ex.items():
      files[f"{release[split]}.char.bmes"] = format_char_tag_file(examples, "BMES", " ")
  elif dataset == "ecommerce":
    for split, examples in ex.items():
      files[f"{release[split]}.txt.bieos"] = format_char_tag_file(examples, "BIOES", "\t")
  elif dataset == "ccks2021":
    for split, examples in ex.items():
      files[f"{release[split]}.conll"] = format_char_tag_file(examples, "BIES", " ",
                                                              final_blank=False)
    tags = [f"{p}-{t}" for t in entity_types.raw_types(dataset) for p in "BIES"] + ["O"]
    files["tags.json"] = json.dumps(
        {"tag": {t: i for i, t in enumerate(tags)},
         "revers_tag": {str(i): t for i, t in enumerate(tags)}},
        ensure_ascii=False, indent=2) + "\n"
  elif dataset == "weibo":
    for split, sents in splits.items():
      blocks = ["\n".join(format_weibo_lines(s)) + "\n" for s in sents]
      files[f"weiboNER_2nd_conll.{release[split]}"] = "\n".join(blocks) + "\n"
  elif dataset == "cluener":
    for split, examples in ex.items():
      lines = [format_cluener_line(e, labeled=split != "test", index=i)
               for i, e in enumerate(examples)]
      files[f"{release[split]}.json"] = "".join(line + "\n" for line in lines)
  elif dataset == "msra":
    train = splits["train"] + splits["validation"]
    files["train.txt"] = "".join(format_msra_line(s) + "\n" for s in train)
    files["test.txt"] = "".join(format_msra_line(s) + "\n" for s in splits["test"])
  elif dataset == "boson":
    examples = ex["train"] + ex["validation"] + ex["test"]
    paragraphs = []
    i = 0
    while i < len(examples):
      size = rng.randrange(2, 6)  # sentences per paragraph
      paragraphs.append(format_boson_paragraph(examples[i:i + size]))
      i += size
    files["BosonNLP_NER_6C.txt"] = "".join(p + "\n" for p in paragraphs)
  elif dataset == "peoples_daily":
    pairs = [format_pd2014_lines(e) for e in ex["train"] + ex["validation"] + ex["test"]]
    files["source_BIO_2014_cropus.txt"] = "".join(src + "\n" for src, _ in pairs)
    files["target_BIO_2014_cropus.txt"] = "".join(tgt + "\n" for _, tgt in pairs)
  elif dataset == "peoples_daily_1998":
    sentences = splits["train"] + splits["validation"] + splits["test"]
    lines = []
    article, paragraph, day = 1, 0, 1
    for s in sentences:
      paragraph += 1
      doc_id = f"199801{day:02d}-01-{article:03d}-{paragraph:03d}/m"
      lines.append("  ".join([doc_id] + format_pd1998_tokens(s)) + "  ")
      if rng.random() < 0.25:  # end the article; the release puts a blank line between them
        lines.append("")
        article, paragraph = article + 1, 0
        if article % 10 == 0:
          day = day % 28 + 1
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    return {"pd1998.txt.gz": _gzip_bytes(data)}
  else:  # pragma: no cover - every registered dataset is handled above
    raise ValueError(f"no writer for dataset {dataset!r}")
  return {name: text.encode("utf-8") for name, text in files.items()}


def corpus_sizes(sizes: Optional[Mapping[str, int]] = None) -> dict[str, int]:
  """Normalised per-split sizes: keys train/validation/test (`dev` is accepted)."""
  out = dict(DEFAULT_SIZES)
  for key, value in (sizes or {}).items():
    split = _split_key(key)
    if not isinstance(value, int) or value < 0:
      raise ValueError(f"size of split {key!r} must be a non-negative int, got {value!r}")
    out[split] = value
  return out


def held_out_plan(sizes: Mapping[str, int]) -> dict[str, dict[str, int]]:
  """Dataset -> held-out split -> number of sentences the reader should sample."""
  return {ds: {split: sizes[split] for split in splits} for ds, splits in HELD_OUT_SPLITS.items()}


def generator_digest() -> str:
  """A short digest of this module and lexicon.py: part of the cache directory name."""
  digest = hashlib.sha256()
  for module_file in (__file__, lexicon.__file__):
    with open(module_file, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()[:12]


def write_corpus(out_dir: str | os.PathLike, *, seed: int = 0,
                 sizes: Optional[Mapping[str, int]] = None) -> str:
  """Writes every dataset, in its release format, under `out_dir`; returns `out_dir`.

  Layout (as a download root): resume/, ontonotes4/, ecommerce/, msra/, cluener2020/,
  ccks2021_address/, weibo/, peoples_daily_1998/, boson/, peoples_daily_2014/, plus the marker
  file `BUILTIN_CORPUS.json`. Same seed and sizes -> byte-identical files.
  """
  out_dir = os.fspath(out_dir)
  sizes = corpus_sizes(sizes)
  counts = {}
  for dataset in entity_types.DATASETS:
    splits = {split: generate_sentences(dataset, split, sizes[split], seed)
              for split in DATASET_SPLITS[dataset]}
    counts[dataset] = {split: len(s) for split, s in splits.items()}
    folder = os.path.join(out_dir, DATASET_DIRS[dataset])
    os.makedirs(folder, exist_ok=True)
    layout_rng = random.Random(f"punified_jax.builtin/v{BUILTIN_VERSION}/{seed}/{dataset}/layout")
    for name, data in _release_files(dataset, splits, layout_rng).items():
      with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
  marker = {
      "name": "punified-jax built-in corpus",
      "note": MARKER_NOTE,
      "version": BUILTIN_VERSION,
      "generator_digest": generator_digest(),
      "seed": seed,
      "sizes": sizes,
      "held_out": held_out_plan(sizes),
      "sentences": counts,
      "dataset_dirs": dict(DATASET_DIRS),
  }
  _write_text(os.path.join(out_dir, MARKER_FILE),
              json.dumps(marker, ensure_ascii=False, indent=2) + "\n")
  return out_dir


def read_marker(raw_dir: str | os.PathLike) -> Optional[dict]:
  """The built-in corpus marker of `raw_dir` (a corpus root or one dataset folder in it), or None
  when `raw_dir` is not a built-in corpus. This is how a reader detects the built-in corpus."""
  from punified_jax import storage  # pylint: disable=g-import-not-at-top
  raw_dir = storage.absolute(raw_dir)  # local or gs://
  for candidate in (raw_dir, storage.dirname(raw_dir)):
    path = storage.join(candidate, MARKER_FILE)
    if storage.isfile(path):
      return storage.read_json(path)
  return None


def held_out_sizes(raw_dir: str | os.PathLike, dataset: str) -> Optional[dict[str, int]]:
  """Held-out split sizes a reader should use for `dataset` in `raw_dir`: {"validation": n, ...}
  for the built-in corpus, None for any other directory (use the paper's 2000)."""
  marker = read_marker(raw_dir)
  if marker is None:
    return None
  return dict(marker["held_out"].get(entity_types.check_dataset(dataset), {}))


def default_cache_root() -> str:
  return os.environ.get("PUNIFIED_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "punified_jax")


def builtin_corpus_dir(seed: int = 0, *, cache_root: Optional[str] = None) -> str:
  """Writes the default-size corpus once into the cache and returns its directory.

  The directory `builtin-v<version>-<digest>-seed<seed>` under `$PUNIFIED_CACHE` (default
  `~/.cache/punified_jax`) is written into a temporary sibling and renamed into place, so a
  reader never sees a half-written corpus; when two processes race, the first rename wins and
  the other's copy is removed.
  """
  root = cache_root or default_cache_root()
  final = os.path.join(root, f"builtin-v{BUILTIN_VERSION}-{generator_digest()}-seed{seed}")
  if os.path.isfile(os.path.join(final, MARKER_FILE)):
    return final
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".builtin-tmp-", dir=root)
  try:
    write_corpus(tmp, seed=seed)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is readable like any download
    try:
      os.rename(tmp, final)
    except OSError:
      # Another process renamed its copy first (the target exists and is not empty).
      if not os.path.isfile(os.path.join(final, MARKER_FILE)):
        raise
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return final

