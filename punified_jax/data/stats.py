"""Dataset statistics for the `stats` command: sentences, mentions, per-type mentions, repairs.

The numbers are the ones the paper's Table 5 reports (sentences and mentions per split), so a
reader can be checked against the paper and against the release notes of each corpus.
"""

from __future__ import annotations

import collections
from typing import Iterable, Optional

from punified_jax import entity_types
from punified_jax.data import sources
from punified_jax.data.example import Example, RepairReport


def _type_order(dataset: Optional[str], per_type: collections.Counter) -> list[str]:
  """Registry order for the dataset's own types, then any other type alphabetically."""
  known = list(entity_types.raw_types(dataset)) if dataset else []
  return [t for t in known if per_type[t]] + sorted(t for t in per_type if t not in known)


def split_stats(examples: Iterable[Example], repairs: Optional[RepairReport] = None, *,
                dataset: Optional[str] = None) -> dict:
  """{"sentences", "mentions", "types": {raw type: mentions}, "repairs": {kind: count}}."""
  sentences = 0
  per_type: collections.Counter[str] = collections.Counter()
  for example in examples:
    sentences += 1
    per_type.update(span.type for span in example.spans)
  return {
      "sentences": sentences,
      "mentions": sum(per_type.values()),
      "types": {t: per_type[t] for t in _type_order(dataset, per_type)},
      "repairs": repairs.as_dict() if repairs is not None else {},
  }


def loaded_stats(loaded: sources.LoadedDataset) -> dict[str, dict]:
  """Per-split statistics of a `sources.load_dataset` result, splits in train/val/test order."""
  return {split: split_stats(examples, loaded.repairs.get(split), dataset=loaded.dataset)
          for split, examples in loaded.splits.items()}


def dataset_stats(dataset: str, raw_dir: Optional[str], *, format: Optional[str] = None,
                  strict: bool = False, seed: int = 0) -> dict[str, dict]:
  """Reads `dataset` as `sources.load_dataset` does and returns its per-split statistics."""
  return loaded_stats(sources.load_dataset(dataset, raw_dir, format=format, strict=strict,
                                           seed=seed))


def format_table(stats: dict[str, dict], *, title: str = "",
                 unlabeled: Iterable[str] = ()) -> str:
  """A plain-text table of `stats` (as returned by `dataset_stats`) for people to read."""
  unlabeled = set(unlabeled)
  splits = list(stats)
  type_names = list(dict.fromkeys(t for s in splits for t in stats[s]["types"]))
  kinds = sorted({k for s in splits for k in stats[s]["repairs"]})
  width = max([12] + [len(t) + 4 for t in type_names] + [len(k) + 4 for k in kinds])

  def row(label: str, values: Iterable) -> str:
    return f"{label:<{width}}" + "".join(f"{v:>12}" for v in values)

  lines = [title] if title else []
  lines.append(row("", splits))
  lines.append(row("sentences", (stats[s]["sentences"] for s in splits)))
  lines.append(row("mentions", ("unlabeled" if s in unlabeled else stats[s]["mentions"]
                                for s in splits)))
  for name in type_names:
    lines.append(row(f"  {name}", (stats[s]["types"].get(name, 0) for s in splits)))
  lines.append(row("repairs", ("" for _ in splits)) if kinds else "repairs: none")
  for kind in kinds:
    lines.append(row(f"  {kind}", (stats[s]["repairs"].get(kind, 0) for s in splits)))
  return "\n".join(lines)
