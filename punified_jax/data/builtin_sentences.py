"""The built-in corpus's sentences: templates filled from our own lexicons, per dataset.

Part of the built-in corpus (`builtin.py` writes the files, `builtin_formats.py` the release
formats). Templates are strings with slots in braces:
  `{city}`      a phrase from lexicon `city`; it is an entity when the dataset maps the lexicon
                to one of its raw types (`LEXICON_TYPES`), plain text otherwise;
  `{person#a}`  slots with the same `#a` label repeat one drawn phrase (a repeated mention);
  `{|甲|乙}`     one of the alternatives, as plain text.

    generate_dataset("resume", "train", 240, seed=0)  -> list[Example] (raw type labels)
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Mapping, Optional

from punified_jax import entity_types
from punified_jax.data import lexicon
from punified_jax.data.example import Example, Span

# Bump when the generator's output changes on purpose; the cache directory name also carries a
# digest of the generator's modules (builtin.generator_digest), so an edited generator never
# reuses a stale cache.
BUILTIN_VERSION = 1
MIN_CHARS, MAX_CHARS = 10, 80

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


def split_key(split: str) -> str:
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
  split = split_key(split)
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

