"""Per-dataset layout: which release files make which split, and the paper's held-out splits.

`load_splits("resume", "/data/raw")` returns `{"train": [...], "validation": [...]}` of
`Example`s. `raw_dir` is either the root of a download tree (one subfolder per dataset, named as
in FOLDERS) or the dataset's own folder; for the `punified_json` format it is the folder with
the paper's JSON files (or a root containing `punifiedner_json/`). `raw_dir="builtin"` (BUILTIN)
reads the built-in synthetic corpus (`punified_jax.data.builtin.builtin_corpus_dir()`, laid out
like a download). There is no default: `raw_dir=None` raises MissingDataError naming both
choices, so synthetic data is never read by accident.

Release `dev` files become the `validation` split. Datasets without a release dev/test split
get the paper's held-out splits, reproducible from `seed` (see `heldout_split`):
  MSRA: 2000 sentences of train become validation.
  Boson, People Daily 2014, People's Daily 1998 (stand-in): 2000 validation + 2000 test
  sentences (after sentence splitting), the rest train.
(At most a quarter of the sentences each, for tiny corpora; such a split may then be empty, but
it is always present, so `available_splits` can name the splits without reading the files.)
Splits that carry no labels (CLUENER test) are listed by `unlabeled_splits`; their Examples
have no spans and no metric may be computed on them. A release file in which not one line
carries a label (e.g. a test file of characters without a tag column) is recognised by its reader
and recorded in `LoadedDataset.unlabeled` as well.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import types as pytypes
from typing import Callable, Iterable, Iterator, Optional

from punified_jax import entity_types
from punified_jax import storage
from punified_jax.data import builtin
from punified_jax.data import readers
from punified_jax.data.example import Example, RepairReport

SPLITS: tuple[str, ...] = ("train", "validation", "test")

FORMATS = pytypes.MappingProxyType({
    "char_tags": "one `char<TAB|SPACE>tag` per line, BIO/BIOES/BMES/BIES "
                 "(Resume, OntoNotes 4.0, Ecommerce, CCKS2021)",
    "weibo2": "Weibo NER 2nd release, `char<digits>\\ttag` (weiboNER_2nd_conll.*)",
    "weibo1": "Weibo NER 1st release, as weibo2 with CESU-8 surrogates (weiboNER.conll.*)",
    "msra": "MSRA/SIGHAN 2006, one sentence a line of `word/tag` (o nr ns nt)",
    "cluener_json": "CLUENER2020 JSON lines {text, label: {type: {entity: [[s, e]]}}}",
    "boson": "BosonNLP_NER_6C.txt, paragraphs with {{type:text}} markup",
    "pd2014": "People Daily 2014 BIO corpus: parallel source/target files",
    "pd1998": "People's Daily 1998 segmented/POS-tagged paragraphs (pd1998.txt.gz)",
    "punified_json": "the PUnifiedNER paper's JSON lines [text, [s, e, span, TYPE], ...]",
})

# Formats each dataset can be read from; the first is its release (default) format.
DATASET_FORMATS = pytypes.MappingProxyType({
    "ecommerce": ("char_tags", "punified_json"),
    "msra": ("msra",),
    "ontonotes4": ("char_tags", "punified_json"),
    "peoples_daily": ("pd2014", "punified_json"),
    "boson": ("boson", "punified_json"),
    "resume": ("char_tags", "punified_json"),
    "cluener": ("cluener_json", "punified_json"),
    "ccks2021": ("char_tags", "punified_json"),
    "weibo": ("weibo2", "weibo1", "punified_json"),
    "peoples_daily_1998": ("pd1998",),
})

# Subfolder of a download root holding each dataset's release files.
FOLDERS = pytypes.MappingProxyType({
    "ecommerce": "ecommerce",
    "msra": "msra",
    "ontonotes4": "ontonotes4",
    "peoples_daily": "peoples_daily_2014",
    "boson": "boson",
    "resume": "resume",
    "cluener": "cluener2020",
    "ccks2021": "ccks2021_address",
    "weibo": "weibo",
    "peoples_daily_1998": "peoples_daily_1998",
})
PUNIFIED_JSON_FOLDER = "punifiedner_json"

# Size of each held-out split the paper made (Table 5: "we sample 2,000 examples and 2,000
# examples ... for evaluation and testing").
HELDOUT_SIZE = 2000

# Release files per (dataset, format): split -> alternative file names (the first that exists
# is read; a tuple of two names inside is a parallel pair). The first split listed is required.
_PLANS: dict[tuple[str, str], dict[str, tuple]] = {
    ("resume", "char_tags"): {
        "train": ("train.char.bmes",), "validation": ("dev.char.bmes",),
        "test": ("test.char.bmes",)},
    ("ontonotes4", "char_tags"): {
        "train": ("train.char.bmes",), "validation": ("dev.char.bmes",),
        "test": ("test.char.bmes",)},
    ("ecommerce", "char_tags"): {
        "train": ("train.txt.bieos",), "validation": ("dev.txt.bieos",),
        "test": ("test.txt.bieos",)},
    ("ccks2021", "char_tags"): {"train": ("train.conll",), "validation": ("dev.conll",)},
    ("weibo", "weibo2"): {
        "train": ("weiboNER_2nd_conll.train",), "validation": ("weiboNER_2nd_conll.dev",),
        "test": ("weiboNER_2nd_conll.test",)},
    ("weibo", "weibo1"): {
        "train": ("weiboNER.conll.train",), "validation": ("weiboNER.conll.dev",),
        "test": ("weiboNER.conll.test",)},
    ("msra", "msra"): {"train": ("train.txt",), "test": ("test.txt",)},
    ("cluener", "cluener_json"): {
        "train": ("train.json",), "validation": ("dev.json",), "test": ("test.json",)},
    ("boson", "boson"): {"train": ("BosonNLP_NER_6C.txt",)},
    ("peoples_daily", "pd2014"): {
        "train": (("source_BIO_2014_cropus.txt", "target_BIO_2014_cropus.txt"),)},
    ("peoples_daily_1998", "pd1998"): {"train": ("pd1998.txt.gz", "pd1998.txt")},
    # The paper's JSON files, all in one folder.
    ("resume", "punified_json"): {
        "train": ("resume_train.json",), "validation": ("resume_dev.json",)},
    ("ontonotes4", "punified_json"): {
        "train": ("ontonotes_train.json",), "validation": ("ontonotes_dev.json",)},
    ("ecommerce", "punified_json"): {
        "train": ("ecommerce_train.json",), "validation": ("ecommerce_dev.json",)},
    ("cluener", "punified_json"): {
        "train": ("ml_train.json",), "validation": ("ml_test_all.json",),
        "test": ("cluener_test.json",)},
    ("ccks2021", "punified_json"): {
        "train": ("chinese_address_train.json",), "validation": ("chinese_address_dev.json",)},
    ("boson", "punified_json"): {
        "train": ("boson_train.json",), "validation": ("boson_dev.json",)},
    ("peoples_daily", "punified_json"): {"validation": ("people_daily_dev.json",)},
    ("weibo", "punified_json"): {
        "train": ("weibo_train.json",), "validation": ("weibo_dev.json",)},
}

# Held-out splits carved out of train: (dataset, format) -> held-out split names, in the order
# they take their sentences from the seeded order.
_HELDOUT: dict[tuple[str, str], tuple[str, ...]] = {
    ("msra", "msra"): ("validation",),
    ("boson", "boson"): ("validation", "test"),
    ("peoples_daily", "pd2014"): ("validation", "test"),
    ("peoples_daily_1998", "pd1998"): ("validation", "test"),
}

_UNLABELED: dict[tuple[str, str], frozenset[str]] = {
    ("cluener", "cluener_json"): frozenset({"test"}),
    ("cluener", "punified_json"): frozenset({"test"}),
}


class MissingDataError(FileNotFoundError):
  """A file a format needs is not where the layout says; the message lists the paths tried."""


# The name that asks for the built-in synthetic corpus wherever a raw directory is expected
# (`--raw_dir builtin`, PUNIFIED_RAW_DIR=builtin, tasks.configure.raw_dir = 'builtin').
BUILTIN = "builtin"


def resolve_raw_dir(raw_dir: Optional[str]) -> str:
  """The directory to read: `raw_dir` itself, or the built-in corpus when it is BUILTIN.

  None is an error, never a silent choice of the synthetic corpus.
  """
  if raw_dir is None:
    raise MissingDataError("no raw data directory given: pass the root of your downloads, or "
                           f"{BUILTIN!r} for the built-in synthetic corpus")
  raw_dir = os.fspath(raw_dir)
  return builtin.builtin_corpus_dir() if raw_dir == BUILTIN else raw_dir


@dataclasses.dataclass
class LoadedDataset:
  """Everything `load_splits` knows about one read: splits plus bookkeeping for `stats`."""
  dataset: str
  format: str
  directory: str
  splits: dict[str, list[Example]]
  # Repairs per split. For held-out splits cut from one file, a repair is counted in the split
  # of the sentence being read when it happened (a dropped sentence: the next one read).
  repairs: dict[str, RepairReport]
  unlabeled: frozenset[str]


def default_format(dataset: str) -> str:
  """The release format `dataset` is read from when no format is given."""
  return DATASET_FORMATS[entity_types.check_dataset(dataset)][0]


def check_format(dataset: str, format: Optional[str]) -> str:
  """Returns the format to use for `dataset` (default if None), or raises ValueError."""
  formats = DATASET_FORMATS[entity_types.check_dataset(dataset)]
  if format is None:
    return formats[0]
  if format not in FORMATS:
    raise ValueError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")
  if format not in formats:
    raise ValueError(f"dataset {dataset!r} cannot be read from format {format!r}; "
                     f"its formats are: {', '.join(formats)}")
  return format


def unlabeled_splits(dataset: str, format: Optional[str] = None) -> frozenset[str]:
  """Splits of `dataset` (read from `format`) whose Examples carry no labels."""
  return _UNLABELED.get((dataset, check_format(dataset, format)), frozenset())


def _candidate_dirs(dataset: str, raw_dir: str, format: str) -> list[str]:
  names = [PUNIFIED_JSON_FOLDER] if format == "punified_json" else [FOLDERS[dataset], dataset]
  candidates = [storage.join(raw_dir, name) for name in dict.fromkeys(names)]
  return candidates + [raw_dir]


def _existing(directory: str, alternatives: tuple) -> Optional[tuple[str, ...]]:
  """Paths of the first alternative present in `directory` (a pair for parallel files)."""
  for alternative in alternatives:
    names = alternative if isinstance(alternative, tuple) else (alternative,)
    paths = tuple(storage.join(directory, name) for name in names)
    if all(storage.isfile(p) for p in paths):
      return paths
  return None


def _describe(alternatives: tuple) -> str:
  return " or ".join(" + ".join(a) if isinstance(a, tuple) else a for a in alternatives)


def dataset_dir(dataset: str, raw_dir: str, format: Optional[str] = None) -> str:
  """The folder holding `dataset`'s files for `format` under `raw_dir` (a root or the folder).

  Raises MissingDataError naming every path tried when the required file is nowhere.
  """
  format = check_format(dataset, format)
  plan = _PLANS[(dataset, format)]
  required = next(iter(plan.values()))
  candidates = _candidate_dirs(dataset, resolve_raw_dir(raw_dir), format)
  for directory in candidates:
    if _existing(directory, required) is not None:
      return directory
  tried = "; ".join(f"{d}/{_describe(required)}" for d in candidates)
  hint = ""
  others = [f for f in DATASET_FORMATS[dataset] if f != format]
  if others:
    hint = f" (other formats for {dataset}: {', '.join(others)}; pass --format)"
  raise MissingDataError(f"{dataset} ({format}): required file not found; looked for {tried}"
                         + hint)


def _reader(dataset: str, format: str, split: str, strict: bool
            ) -> Callable[[tuple[str, ...], RepairReport], Iterator[Example]]:
  """A function (paths, report) -> Examples for one file (or parallel pair)."""
  known = frozenset(entity_types.raw_types(dataset))
  if format == "char_tags":
    return lambda p, r: readers.read_char_tags(p[0], strict=strict, report=r, types=known)
  if format in ("weibo1", "weibo2"):
    version = 1 if format == "weibo1" else 2
    return lambda p, r: readers.read_weibo(p[0], version=version, strict=strict, report=r,
                                           types=known)
  if format == "msra":
    return lambda p, r: readers.read_msra(p[0], strict=strict, report=r)
  if format == "cluener_json":
    labeled = split not in _UNLABELED.get((dataset, format), ())
    return lambda p, r: readers.read_cluener_json(p[0], strict=strict, report=r, types=known,
                                                  require_labels=labeled)
  if format == "boson":
    return lambda p, r: readers.read_boson(p[0], strict=strict, report=r, types=known)
  if format == "pd2014":
    return lambda p, r: readers.read_pd2014(p[0], p[1], strict=strict, report=r, types=known)
  if format == "pd1998":
    return lambda p, r: readers.read_pd1998(p[0], strict=strict, report=r)
  if format == "punified_json":
    return lambda p, r: readers.read_punified_json(p[0], strict=strict, report=r, types=known)
  raise AssertionError(format)


def _heldout_key(seed: int, index: int) -> bytes:
  return hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()


def heldout_size(total: int, want: int = HELDOUT_SIZE) -> int:
  """Sentences per held-out split: `want` (2000), but at most a quarter of `total`.

  The cap only matters for tiny corpora (the built-in corpus, test fixtures), which would
  otherwise lose their whole train split; the real corpora are all far larger.
  """
  return min(want, total // 4)


def heldout_split(total: int, names: tuple[str, ...], seed: int,
                  sizes: Optional[dict[str, int]] = None) -> dict[str, list[int]]:
  """Indices 0..total-1 divided into `names` held-out splits and "train", from `seed`.

  The order is sorted(range(total), key=blake2b(f"{seed}:{index}")): a pure function of the
  seed and the index, so the split is the same on every machine and every Python/NumPy
  version. The first heldout_size(total) indices of that order go to names[0], the next to
  names[1], ...; the rest are train. Each split keeps file order. `sizes` overrides the size per
  held-out split (the built-in corpus records its own in its marker file).
  """
  order = sorted(range(total), key=lambda i: _heldout_key(seed, i))
  assignment = {}
  taken = 0
  for name in names:
    size = (sizes or {}).get(name, heldout_size(total))
    for index in order[taken:taken + size]:
      assignment[index] = name
    taken += size
  result: dict[str, list[int]] = {"train": []}
  for name in names:
    result[name] = []
  for index in range(total):
    result[assignment.get(index, "train")].append(index)
  return result


def _read_attributed(examples: Iterable[Example], report: RepairReport
                     ) -> tuple[list[Example], list[collections.Counter], collections.Counter]:
  """Reads all `examples`; returns them, the repairs counted while producing each one, and the
  repairs counted after the last one (a dropped final sentence)."""
  out, deltas = [], []
  before = collections.Counter(report.counts)
  for example in examples:
    now = collections.Counter(report.counts)
    out.append(example)
    deltas.append(now - before)
    before = now
  return out, deltas, collections.Counter(report.counts) - before


def _split_report(counts: collections.Counter, file_report: RepairReport) -> RepairReport:
  """A report with `counts`, borrowing the file's first locations of each kind."""
  report = RepairReport()
  for kind, n in counts.items():
    if n:
      report.counts[kind] = n
      report.locations[kind] = list(file_report.locations.get(kind, []))
  return report


def available_splits(dataset: str, raw_dir: Optional[str] = None, *,
                     format: Optional[str] = None) -> tuple[str, ...]:
  """The split names `load_splits` returns for these files, without reading them.

  Raises MissingDataError (naming the paths tried) when the required file is missing.
  """
  format = check_format(dataset, format)
  directory = dataset_dir(dataset, resolve_raw_dir(raw_dir), format)
  names = set()
  for split, alternatives in _PLANS[(dataset, format)].items():
    if _existing(directory, alternatives) is not None:
      names.add(split)
      if split == "train":
        names.update(_HELDOUT.get((dataset, format), ()))
  return tuple(name for name in SPLITS if name in names)


def split_files(dataset: str, raw_dir: Optional[str] = None, *,
                format: Optional[str] = None) -> dict[str, list[str]]:
  """The files each split of `dataset` is read from (a held-out split names the file it is cut
  from), for run records such as the data manifest. Raises MissingDataError like dataset_dir."""
  format = check_format(dataset, format)
  directory = dataset_dir(dataset, raw_dir, format)
  files: dict[str, list[str]] = {}
  for split, alternatives in _PLANS[(dataset, format)].items():
    paths = _existing(directory, alternatives)
    if paths is None:
      continue
    files[split] = list(paths)
    if split == "train":
      for name in _HELDOUT.get((dataset, format), ()):
        files[name] = list(paths)
  return {name: files[name] for name in SPLITS if name in files}


def load_dataset(dataset: str, raw_dir: Optional[str] = None, *, format: Optional[str] = None,
                 strict: bool = False, seed: int = 0) -> LoadedDataset:
  """Reads every split of `dataset` that its layout finds under `raw_dir` (see module doc)."""
  format = check_format(dataset, format)
  raw_dir = resolve_raw_dir(raw_dir)
  directory = dataset_dir(dataset, raw_dir, format)
  heldout = _HELDOUT.get((dataset, format), ())
  splits: dict[str, list[Example]] = {}
  repairs: dict[str, RepairReport] = {}
  detected_unlabeled: set[str] = set()  # files whose reader found no label at all
  for split, alternatives in _PLANS[(dataset, format)].items():
    paths = _existing(directory, alternatives)
    if paths is None:
      continue  # an optional split (dataset_dir has checked the required one)
    read = _reader(dataset, format, split, strict)
    file_report = RepairReport()
    if split != "train" or not heldout:
      splits[split] = list(read(paths, file_report))
      repairs[split] = file_report
      if file_report.unlabeled_files:
        detected_unlabeled.add(split)
      continue
    examples, deltas, trailing = _read_attributed(read(paths, file_report), file_report)
    if file_report.unlabeled_files:
      detected_unlabeled.update(("train", *heldout))
    # Every held-out split is present, even when a tiny file leaves it empty, so the split
    # names depend on the files only (see `available_splits`).
    sizes = builtin.held_out_sizes(raw_dir, dataset)
    for name, indices in heldout_split(len(examples), heldout, seed, sizes).items():
      splits[name] = [examples[i] for i in indices]
      counts = sum((deltas[i] for i in indices), collections.Counter())
      if name == "train":
        counts += trailing  # a dropped last sentence
      repairs[name] = _split_report(counts, file_report)
  ordered = {name: splits[name] for name in SPLITS if name in splits}
  return LoadedDataset(dataset=dataset, format=format, directory=directory, splits=ordered,
                       repairs={name: repairs[name] for name in ordered},
                       unlabeled=unlabeled_splits(dataset, format) | frozenset(detected_unlabeled))


def load_splits(dataset: str, raw_dir: Optional[str] = None, *, format: Optional[str] = None,
                strict: bool = False, seed: int = 0,
                report: Optional[RepairReport] = None) -> dict[str, list[Example]]:
  """`{"train": [...], "validation": [...], "test": [...]}` (splits present) for `dataset`.

  `strict` raises DataFormatError at the first malformation; otherwise repairs are counted
  into `report` (all splits together). `seed` fixes the held-out splits.
  """
  loaded = load_dataset(dataset, raw_dir, format=format, strict=strict, seed=seed)
  if report is not None:
    for split_report in loaded.repairs.values():
      report.merge(split_report)
  return loaded.splits
