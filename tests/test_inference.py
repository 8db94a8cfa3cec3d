"""Tests for punified_jax.inference (Extractor) and punified_jax.model_info.

A tiny T5 (one layer each side, d_model 64) with a character-level SentencePiece vocabulary
trained on the corpus below, either random (property tests: whatever the model says, every
entity is a slice of the input at its offsets) or overfit with optax on TRAIN_EXAMPLES (literal
entities and offsets).  Every extractor here decodes batches of BATCH_SIZE windows padded to 32
tokens with outputs of 40 tokens, so all tests (and test_constraints / test_extract_cli, which
import the helpers below) share a few compiled programs.
"""

import json
import os
import shutil

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from punified_jax import checkpoints
from punified_jax import decoding
from punified_jax import entity_types
from punified_jax import generate
from punified_jax import inference
from punified_jax import model as model_lib
from punified_jax import model_info
from punified_jax import prompts
from punified_jax import run_dir
from punified_jax import searches
from punified_jax import vocab as vocab_lib
from punified_jax import windows as windows_lib

# ------------------------------------------------------------------------------------------
# Helpers shared with test_constraints.py and test_extract_cli.py.
# ------------------------------------------------------------------------------------------

TYPES = ("地点", "组织")
# Sentences with a repeated mention, full-width and ASCII brackets, a comma and colons inside
# and around entities, and a sentence without entities.
TRAIN_EXAMPLES = (
    ("北京和北京大学都在北京。", [("地点", "北京"), ("组织", "北京大学")]),
    ("Apple（苹果）在上海，有公司：好!", [("组织", "Apple（苹果）"), ("地点", "上海")]),
    ("张三去了(上海),没有去北京。", [("地点", "(上海)"), ("地点", "北京")]),
    ("今天天气很好。", []),
)
CORPUS = [text for text, _ in TRAIN_EXAMPLES] + [
    "李四在深圳的公司工作：经理；一二三四五六七八九十。",
    "abcdefghij 0123456789 NULL ?!；",
]
FEATURE_LENGTHS = {"inputs": 32, "targets": 40}
BATCH_SIZE = 4


def train_vocab(directory) -> str:
  return vocab_lib.train_sentencepiece(CORPUS, os.path.join(str(directory), "char.model"))


def tiny_config(vocab_size: int) -> model_lib.T5Config:
  # 4 heads: with 2, one decoder layer does not learn to count the closing "))" in time.
  return model_lib.T5Config(vocab_size=vocab_size, emb_dim=64, num_heads=4, head_dim=16,
                            mlp_dim=128, num_encoder_layers=1, num_decoder_layers=1,
                            dropout_rate=0.0)


def random_params(config: model_lib.T5Config, seed: int = 0):
  """T5-scaled random parameters drawn with numpy (no init program to compile)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "scale":
      return jnp.ones(leaf.shape, jnp.float32)
    if name in ("embedding", "rel_embedding"):
      return jnp.asarray(rng.normal(size=leaf.shape), jnp.float32)
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0]), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, model_lib.param_shapes(config))


def write_model_dir(directory, vocab_path: str, config, params, *, step: int = 0,
                    subdir: str = run_dir.CHECKPOINTS_DIR, extra=None) -> str:
  """A model directory as the trainer leaves it: punified_model.json + vocab/ + a checkpoint."""
  directory = str(directory)
  model_info.save_model_info(directory, t5_config=config, vocabulary_path=vocab_path,
                             task_feature_lengths=FEATURE_LENGTHS, extra=extra)
  checkpoints.save_params(os.path.join(directory, subdir), params, step=step)
  return directory


def wordpiece_tokens(size: int) -> list[str]:
  """A BERT-style vocab.txt of exactly `size` lines (same size as the SentencePiece vocab, so
  the WordPiece model has the same shapes and reuses the compiled programs)."""
  letters = "abcdefghijklmnopqrstuvwxyz"
  tokens = (["[PAD]"] + [f"[unused{i}]" for i in range(1, 10)] + ["[UNK]", "[CLS]", "[SEP]"]
            + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("0123456789") + list(letters)
            + ["##" + c for c in letters + "0123456789"]
            + list("（）：，。；！？北京大学上海深圳张三李四去了和都在有公司好今天气很地点组织名称泛指")
            + ["new", "york", "iphone", "12", "un", "##aff", "##able"])
  assert len(tokens) <= size, len(tokens)
  return tokens + [f"[extra{i}]" for i in range(size - len(tokens))]


def teacher_forced_log_probs(extractor, window_ids, output) -> np.ndarray:
  """float32 [len(output)]: log P(output[i] | input, output[:i]) from a full forward pass of
  the extractor's model (what the search's recorded token log-probs must equal)."""
  inputs = jnp.asarray([window_ids], jnp.int32)
  tokens = jnp.asarray([output], jnp.int32)
  decoder_inputs = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  logits = extractor.model.apply({"params": extractor.params}, inputs, decoder_inputs,
                                 jnp.ones_like(tokens), enable_dropout=False)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return np.asarray(jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[0, :, 0])


class GivenOutputDecoder:
  """Stands in for an Extractor's MeshDecoder: every row "decodes" to `output` (token ids
  ending in EOS), scored by a teacher-forced pass, so `Extractor.extract` runs its real
  parsing, realignment, offset and scoring path on an output the test chose."""

  def __init__(self, extractor, output):
    self.extractor = extractor
    self.output = [int(token) for token in output]

  def padded_size(self, batch: int) -> int:  # one device: no data axis to round up to
    return batch

  def on_local_cpu(self) -> bool:
    return True

  def decode(self, model, params, rows, constraint, *, max_decode_length, **unused):
    assert len(self.output) <= max_decode_length
    batch = rows.shape[0]
    tokens = np.zeros((batch, 1, max_decode_length), np.int32)
    tokens[:, 0, :len(self.output)] = self.output
    token_log_probs = np.zeros(tokens.shape, np.float32)
    scored = {}  # padding rows repeat a window: one pass per distinct input
    for row in range(batch):
      ids = tuple(int(token) for token in rows[row] if token)
      if ids not in scored:
        scored[ids] = teacher_forced_log_probs(self.extractor, list(ids), self.output)
      token_log_probs[row, 0, :len(self.output)] = scored[ids]
    total = token_log_probs.sum(axis=-1)
    return decoding.DecodeOutput(tokens, total, total, token_log_probs, None)


def extract_given_output(extractor, text: str, types, output) -> list[dict]:
  """`extractor.extract([text], types)` with the search replaced by `output` (one window)."""
  assert len(extractor.window_ranges(text, types)) == 1
  real = extractor.decoder
  extractor.decoder = GivenOutputDecoder(extractor, output)
  try:
    (entities,) = extractor.extract([text], types=list(types))
  finally:
    extractor.decoder = real
  return entities


def record_extractor_loads(monkeypatch) -> list:
  """Makes Extractor.load append every Extractor it returns to the list returned here (what a
  command built from its flags)."""
  loaded = []
  load = inference.Extractor.load

  def recording_load(*args, **kwargs):
    loaded.append(load(*args, **kwargs))
    return loaded[-1]

  monkeypatch.setattr(inference.Extractor, "load", recording_load)
  return loaded


def check_entities(text: str, types, entities) -> None:
  """The extraction guarantees for one text."""
  seen = set()
  for entity in entities:
    assert set(entity) == {"type", "text", "start", "end", "score"}
    assert entity["type"] in types
    assert 0 <= entity["start"] < entity["end"] <= len(text)
    assert text[entity["start"]:entity["end"]] == entity["text"]
    assert isinstance(entity["score"], float) and 0.0 <= entity["score"] <= 1.0
    key = (entity["type"], entity["start"], entity["end"])
    assert key not in seen
    seen.add(key)
  assert entities == sorted(entities, key=lambda e: (e["start"], e["end"], e["type"]))


# ------------------------------------------------------------------------------------------
# Fixtures.
# ------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory) -> str:
  return train_vocab(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def sp_vocab(vocab_path):
  return vocab_lib.get_vocabulary(vocab_path)


@pytest.fixture(scope="module")
def config(sp_vocab):
  return tiny_config(sp_vocab.vocab_size)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vocab_path, config) -> str:
  return write_model_dir(tmp_path_factory.mktemp("run"), vocab_path, config,
                         random_params(config), step=7)


@pytest.fixture(scope="module")
def random_extractor(model_dir):
  return inference.Extractor.load(model_dir, batch_size=BATCH_SIZE)


@pytest.fixture(scope="module")
def trained_params(config, sp_vocab):
  """The tiny model overfit (optax.adam, 200 steps) on the prompted TRAIN_EXAMPLES."""
  def pad(rows, length):
    return jnp.asarray([row + [0] * (length - len(row)) for row in rows], jnp.int32)

  inputs = pad([sp_vocab.encode(prompts.format_input(text, TYPES)) + [1]
                for text, _ in TRAIN_EXAMPLES], FEATURE_LENGTHS["inputs"])
  targets = pad([sp_vocab.encode(prompts.format_target(mentions, TYPES)) + [1]
                 for _, mentions in TRAIN_EXAMPLES], FEATURE_LENGTHS["targets"])
  decoder_inputs = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))
  net = model_lib.Transformer(config)
  optimizer = optax.adam(3e-3)

  @jax.jit
  def train_step(params, state):
    def loss_fn(p):
      logits = net.apply({"params": p}, inputs, decoder_inputs, targets, enable_dropout=False)
      loss, _, weight = model_lib.compute_loss(logits, targets, (targets > 0).astype(jnp.float32),
                                               z_loss=0.0)
      return loss / weight
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  params = random_params(config, seed=1)
  state = optimizer.init(params)
  losses = []
  for _ in range(200):
    params, state, loss = train_step(params, state)
    losses.append(float(loss))
  assert losses[-1] < 0.02 < losses[0]
  return params


@pytest.fixture(scope="module")
def trained_extractor(config, trained_params, sp_vocab):
  return inference.Extractor(model_lib.Transformer(config), trained_params, sp_vocab,
                             batch_size=BATCH_SIZE,
                             max_input_length=FEATURE_LENGTHS["inputs"],
                             max_decode_length=FEATURE_LENGTHS["targets"])


# ------------------------------------------------------------------------------------------
# Literal behaviour of the overfit model.
# ------------------------------------------------------------------------------------------

EXPECTED = [
    [("地点", "北京", 0, 2), ("组织", "北京大学", 3, 7), ("地点", "北京", 9, 11)],
    [("组织", "Apple（苹果）", 0, 9), ("地点", "上海", 10, 12)],
    [("地点", "(上海)", 4, 8), ("地点", "北京", 12, 14)],
    [],
]


def _plain(entities):
  return [(e["type"], e["text"], e["start"], e["end"]) for e in entities]


def test_overfit_model_extracts_the_literal_entities(trained_extractor):
  texts = [text for text, _ in TRAIN_EXAMPLES]
  result = trained_extractor.extract(texts, types=list(TYPES))
  assert [_plain(entities) for entities in result] == EXPECTED
  for text, entities in zip(texts, result):
    check_entities(text, TYPES, entities)
    assert all(e["score"] > 0.9 for e in entities)
  # The repeated mention 北京 shares one item, hence one score.
  assert result[0][0]["score"] == result[0][2]["score"]


def test_extract_scores_equal_a_teacher_forced_pass_over_the_same_output(trained_extractor,
                                                                        sp_vocab):
  # extract() takes the scores the search recorded; a separate teacher-forced forward pass
  # over the memorised output, scored by the same extract() path, must agree.
  text = TRAIN_EXAMPLES[1][0]
  (found,) = trained_extractor.extract([text], types=list(TYPES))
  output = sp_vocab.encode(prompts.format_target(TRAIN_EXAMPLES[1][1], TYPES)) + [1]
  scored = extract_given_output(trained_extractor, text, TYPES, output)
  assert _plain(found) == _plain(scored) == EXPECTED[1]
  np.testing.assert_allclose([e["score"] for e in found], [e["score"] for e in scored],
                             rtol=1e-4)


def test_long_text_is_windowed_and_offsets_map_back(trained_extractor):
  # 3 sentences, 46 characters: more than the 24 text tokens one window holds.
  long_text = "".join(text for text, _ in TRAIN_EXAMPLES[:3])
  assert trained_extractor.window_ranges(long_text, TYPES) == [(0, 12), (12, 31), (31, 46)]
  before = trained_extractor.stats
  (entities,) = trained_extractor.extract([long_text], types=list(TYPES))
  starts = [0, 12, 31]
  expected = [(t, s, start + a, start + b) for start, items in zip(starts, EXPECTED)
              for t, s, a, b in items]
  assert _plain(entities) == expected
  check_entities(long_text, TYPES, entities)
  after = trained_extractor.stats
  assert after["windows"] - before.get("windows", 0) == 3
  assert after["split_texts"] - before.get("split_texts", 0) == 1


def test_types_order_and_subset_are_the_callers(trained_extractor):
  # Requesting only 组织: no 地点 entity can come back (the constraint copies requested types).
  (entities,) = trained_extractor.extract([TRAIN_EXAMPLES[0][0]], types=["组织"])
  assert all(e["type"] == "组织" for e in entities)


def test_given_output_scores_and_counts_unlocatable_spans(trained_extractor, sp_vocab):
  text = TRAIN_EXAMPLES[0][0]
  target = prompts.format_target(TRAIN_EXAMPLES[0][1], TYPES)
  output = sp_vocab.encode(target) + [1]
  entities = extract_given_output(trained_extractor, text, TYPES, output)
  assert _plain(entities) == EXPECTED[0]
  assert all(e["score"] > 0.9 for e in entities)
  before = trained_extractor.stats.get("not_located", 0)
  missing = sp_vocab.encode("((地点:深圳),(组织:北京大学))") + [1]
  assert _plain(extract_given_output(trained_extractor, text, TYPES, missing)) == [
      ("组织", "北京大学", 3, 7)]
  assert trained_extractor.stats["not_located"] == before + 1


# ------------------------------------------------------------------------------------------
# Properties with a random model: whatever it says, every entity is a slice of the input.
# ------------------------------------------------------------------------------------------

# CJK, ASCII and full-width punctuation (the grammar's own characters among them), sentence
# ends, spaces, newlines, the letters of "NULL", and characters outside the vocabulary (byte
# fallback).
_ALPHABET = "北京大学上海张三和在了。，：（）(),: !?？；\nNULLab1é😀"
TEXTS = st.lists(st.text(alphabet=st.sampled_from(_ALPHABET), max_size=90), min_size=1,
                 max_size=3)
REQUESTED = st.lists(st.sampled_from(["地点", "组织", "名称", "公司"]), min_size=1, max_size=3,
                     unique=True)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(texts=TEXTS, types=REQUESTED)
def test_random_model_entities_are_slices_at_their_offsets(random_extractor, texts, types):
  before = random_extractor.stats.get("not_located", 0)
  results = random_extractor.extract(texts, types=types)
  assert len(results) == len(texts)
  for text, entities in zip(texts, results):
    check_entities(text, types, entities)
  # Constrained spans are copies of the input: every one is found.
  assert random_extractor.stats.get("not_located", 0) == before


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(texts=TEXTS, types=REQUESTED, beam_size=st.sampled_from([1, 4]))
def test_greedy_and_unconstrained_keep_the_guarantee(model_dir, texts, types, beam_size):
  for constrained in (True, False):
    extractor = _extractor(model_dir, beam_size, constrained)
    for text, entities in zip(texts, extractor.extract(texts, types=types)):
      check_entities(text, types, entities)


_EXTRACTORS = {}


def _extractor(model_dir, beam_size, constrained):
  key = (model_dir, beam_size, constrained)
  if key not in _EXTRACTORS:
    _EXTRACTORS[key] = inference.Extractor.load(model_dir, batch_size=BATCH_SIZE,
                                                beam_size=beam_size, constrained=constrained)
  return _EXTRACTORS[key]


def test_unconstrained_decoding_counts_what_it_cannot_locate(config, trained_params, sp_vocab):
  """The overfit model recites its training targets.  Free decoding on a text where 北京 became
  北平 writes spans that are not in the text (and types nobody asked for); they are counted,
  never returned.  The constraint only lets it copy what is there."""
  text = "北平和北平大学都在北平。"
  results = {}
  for constrained in (False, True):
    extractor = inference.Extractor(
        model_lib.Transformer(config), trained_params, sp_vocab, batch_size=BATCH_SIZE,
        constrained=constrained, max_input_length=FEATURE_LENGTHS["inputs"],
        max_decode_length=FEATURE_LENGTHS["targets"])
    (entities,) = extractor.extract([text], types=["地点"])
    check_entities(text, ["地点"], entities)
    results[constrained] = (_plain(entities), extractor.stats)
  # Free: it writes ((地点:北京),(组织:北京大学)): 北京 is counted, 组织 was never requested.
  entities, stats = results[False]
  assert entities == []
  assert (stats["mentions"], stats["not_located"], stats["unrequested_type_items"]) == (1, 1, 1)
  # Constrained: only 北 can be copied (the model then runs out of its budget: truncated).
  entities, stats = results[True]
  assert entities == [("地点", "北", 0, 1), ("地点", "北", 3, 4), ("地点", "北", 9, 10)]
  assert stats.get("not_located", 0) == 0 and "unrequested_type_items" not in stats
  assert stats["mentions"] == stats["located_mentions"] == 1


# ------------------------------------------------------------------------------------------
# WordPiece (lossy) vocabulary: spans realigned to the input's own characters.
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory, sp_vocab):
  path = tmp_path_factory.mktemp("wp") / "vocab.txt"
  path.write_text("\n".join(wordpiece_tokens(sp_vocab.vocab_size)) + "\n", encoding="utf-8")
  return vocab_lib.get_vocabulary(str(path))


@pytest.fixture(scope="module")
def wordpiece_extractor(wordpiece, config):
  assert wordpiece.vocab_size == config.vocab_size  # same shapes, same compiled programs
  return inference.Extractor(model_lib.Transformer(config), random_params(config, seed=2),
                             wordpiece, batch_size=BATCH_SIZE,
                             max_input_length=FEATURE_LENGTHS["inputs"],
                             max_decode_length=FEATURE_LENGTHS["targets"])


def test_wordpiece_spans_are_realigned_to_the_original_characters(wordpiece_extractor,
                                                                   wordpiece):
  text = "我去New  York，iPhone12和😀上海。"
  cases = [
      ("((地点:new york))", [("地点", "New  York", 2, 11)]),  # lower-cased, re-spaced
      ("((地点:12))", [("地点", "12", 18, 20)]),  # a "##12" piece decodes as "12"
      (["((地点:", wordpiece.unk_id, "上海))"], [("地点", "😀上海", 21, 24)]),  # unknown char
      ("((地点:NULL),(组织:iphone12))", [("组织", "iPhone12", 12, 20)]),
  ]
  for target, expected in cases:
    pieces = [target] if isinstance(target, str) else target
    output = [token for piece in pieces
              for token in ([piece] if isinstance(piece, int) else wordpiece.encode(piece))]
    output.append(wordpiece.eos_id)
    entities = extract_given_output(wordpiece_extractor, text, TYPES, output)
    assert _plain(entities) == expected, target
    check_entities(text, TYPES, entities)


def test_wordpiece_unseen_types_are_read_as_the_model_writes_them(wordpiece_extractor, wordpiece):
  # "Person" is written (and decoded) as "person": the entity still carries the caller's name.
  text = "我去New  York。"
  output = wordpiece.encode("((Person:new york))") + [wordpiece.eos_id]
  wordpiece_extractor.allow_unseen_types = True
  try:
    entities = extract_given_output(wordpiece_extractor, text, ["Person"], output)
  finally:
    wordpiece_extractor.allow_unseen_types = False
  assert _plain(entities) == [("Person", "New  York", 2, 11)]


_WORDPIECE_ALPHABET = "北京大学上海张三和在。，：（）(),: !?\nNewYorkiphone12Éé😀"


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(texts=st.lists(st.text(alphabet=st.sampled_from(_WORDPIECE_ALPHABET),
                                         max_size=60), min_size=1, max_size=3),
                  types=REQUESTED)
def test_wordpiece_random_model_entities_are_slices(wordpiece_extractor, texts, types):
  before = wordpiece_extractor.stats.get("not_located", 0)
  for text, entities in zip(texts, wordpiece_extractor.extract(texts, types=types)):
    check_entities(text, types, entities)
  assert wordpiece_extractor.stats.get("not_located", 0) == before


# ------------------------------------------------------------------------------------------
# Windows, buckets.
# ------------------------------------------------------------------------------------------


def test_bucket_lengths_and_sentence_ends_literal():
  assert generate.input_buckets(32) == (32,)
  assert generate.input_buckets(20) == (20,)
  assert generate.input_buckets(100) == (32, 48, 64, 96, 100)
  assert generate.input_buckets(512) == (32, 48, 64, 96, 128, 192, 256, 384, 512)
  assert inference.sentence_ends("a。b!c\nd") == [2, 4, 6, 7]
  assert inference.sentence_ends("ab；") == [3]
  assert inference.sentence_ends("") == [0]


def test_window_ranges_literal(random_extractor):
  # Prompt <entity>地点<entity>组织<text> = 7 tokens, EOS 1: 24 text tokens per window.
  assert random_extractor.window_ranges("一二三四五六七八九十。" * 3, TYPES) == [(0, 22), (22, 33)]
  # One 60-token "sentence": cut at 24 tokens, each window starting 6 tokens (a quarter)
  # before the previous one ends.
  assert random_extractor.window_ranges("abcdefghij" * 6, TYPES) == [(0, 24), (18, 42),
                                                                     (36, 60)]
  # A character outside the vocabulary is 3 byte tokens (UTF-8): never cut inside it.
  text = "a" * 22 + "龘" + "b" * 30
  assert random_extractor.window_ranges(text, TYPES) == [(0, 22), (18, 40), (34, 53)]
  assert random_extractor.window_ranges("短句。", TYPES) == [(0, 3)]
  assert random_extractor.window_ranges("", TYPES) == [(0, 0)]


def test_prompt_cache_is_bounded_and_exact(random_extractor, monkeypatch, sp_vocab):
  monkeypatch.setattr(windows_lib, "PROMPT_CACHE_SIZE", 2)
  random_extractor._prompts.clear()  # pylint: disable=protected-access
  lists = [("地点",), ("组织",), ("地点", "组织")]
  for names in lists:
    ids = random_extractor._prompt_ids(names)  # pylint: disable=protected-access
    assert ids == sp_vocab.encode(prompts.format_input("", names))
  assert list(random_extractor._prompts) == lists[1:]  # the oldest went  # pylint: disable=protected-access
  (window,) = random_extractor.plan_windows("北京大学", ("地点", "组织"))
  assert window.input_ids == sp_vocab.encode(prompts.format_input("北京大学", ("地点", "组织"))) + [
      sp_vocab.eos_id]


def test_overlapping_windows_merge_duplicates(trained_extractor):
  # 北京大学 in a 40-character run without sentence ends: the cut windows overlap, and the
  # entity found in two windows is returned once.
  text = "北京大学" + "和" * 16 + "北京大学" + "和" * 16
  trained_extractor.reset_stats()
  (entities,) = trained_extractor.extract([text], types=list(TYPES))
  check_entities(text, TYPES, entities)
  assert trained_extractor.stats["windows"] == 2


# ------------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------------


def test_request_errors_are_literal(random_extractor):
  extract = random_extractor.extract
  with pytest.raises(TypeError, match=r"texts must be a list of strings \(wrap a single text"):
    extract("北京", types=["地点"])
  with pytest.raises(TypeError, match=r"^texts\[1\] is a NoneType, not a str$"):
    extract(["北京", None], types=["地点"])
  with pytest.raises(TypeError, match=r"^texts\[0\] is a int, not a str$"):
    extract([3], types=["地点"])
  with pytest.raises(ValueError, match="^types is empty: request at least one entity type$"):
    extract(["北京"], types=[])
  with pytest.raises(ValueError, match="^no entity types requested: give types"):
    extract(["北京"])
  with pytest.raises(ValueError, match="^give either types or dataset, not both$"):
    extract(["北京"], types=["地点"], dataset="msra")
  with pytest.raises(ValueError, match="unknown dataset 'nope'; known datasets: ecommerce"):
    extract(["北京"], dataset="nope")
  with pytest.raises(ValueError, match=r"^unknown entity type\(s\) 城堡; known types: 品牌, 商品"):
    extract(["北京"], types=["地点", "城堡"])
  with pytest.raises(ValueError, match="allow_unseen_types=True lets other names through"):
    extract(["北京"], types=["城堡"])
  with pytest.raises(ValueError, match="entity type name '地:点' contains ':'"):
    extract(["北京"], types=["地:点"])
  with pytest.raises(ValueError, match=r"entity type name '\(地点' contains '\('"):
    extract(["北京"], types=["(地点"])
  with pytest.raises(ValueError, match="entity type names are repeated in the prompt: 地点"):
    extract(["北京"], types=["地点", "地点"])
  with pytest.raises(TypeError, match="^types must be a list of type names, got str '地点'$"):
    extract(["北京"], types="地点")
  with pytest.raises(TypeError, match=r"^types\[1\] is a int, not a string$"):
    extract(["北京"], types=["地点", 5])


def test_empty_texts_dataset_and_unseen_types(random_extractor, model_dir):
  assert random_extractor.extract([], types=["地点"]) == []
  assert random_extractor.extract(["", "  \n"], types=["地点"]) == [[], []]
  (entities,) = random_extractor.extract(["Apple手机壳"], dataset="ecommerce")
  check_entities("Apple手机壳", entity_types.prompt_names("ecommerce"), entities)
  unseen = _extractor(model_dir, 4, True)
  unseen.allow_unseen_types = True
  try:
    (entities,) = unseen.extract(["北京大学的城堡"], types=["城堡"])
    check_entities("北京大学的城堡", ["城堡"], entities)
  finally:
    unseen.allow_unseen_types = False


def test_prompt_too_long_for_the_model(sp_vocab, config):
  extractor = inference.Extractor(config, None, sp_vocab, max_input_length=16)
  with pytest.raises(ValueError, match=r"takes 17 tokens: max_input_length=16 leaves no room"):
    extractor.extract(["北京"], types=["地缘政治实体", "地缘政治实体泛指"])


def test_constructor_rejects_bad_arguments(sp_vocab, config):
  with pytest.raises(ValueError, match="beam_size must be an int >= 1, got 0"):
    inference.Extractor(config, None, sp_vocab, beam_size=0)
  with pytest.raises(TypeError, match="model must be a model.Transformer or a T5Config"):
    inference.Extractor("t5", None, sp_vocab)
  small = model_lib.T5Config(vocab_size=8, emb_dim=8, num_heads=1, head_dim=8, mlp_dim=8)
  with pytest.raises(ValueError, match=r"the vocabulary has \d+ tokens but the model only 8"):
    inference.Extractor(small, None, sp_vocab)


# ------------------------------------------------------------------------------------------
# Loading a model directory; model_info.
# ------------------------------------------------------------------------------------------


def test_load_prefers_the_best_checkpoint(tmp_path, vocab_path, config, model_dir):
  run = str(tmp_path / "run")
  shutil.copytree(model_dir, run)
  assert inference.Extractor.load(run).checkpoint_path == os.path.join(
      run, "checkpoints", "7", "state")
  checkpoints.save_params(os.path.join(run, "best"), random_params(config, seed=5), step=3)
  assert inference.Extractor.load(run).checkpoint_path == os.path.join(run, "best", "3", "state")
  assert inference.Extractor.load(run, checkpoint="latest").checkpoint_path.endswith(
      os.path.join("checkpoints", "7", "state"))
  shutil.rmtree(os.path.join(run, "best"))
  with pytest.raises(FileNotFoundError, match="kept no best checkpoint"):
    inference.Extractor.load(run, checkpoint="best")
  loaded = inference.Extractor.load(run, beam_size=2, max_input_length=64)
  assert (loaded.beam_size, loaded.max_input_length, loaded.max_decode_length) == (2, 64, 40)
  assert loaded.buckets == (32, 48, 64)


def test_model_info_round_trip(tmp_path, vocab_path, config):
  directory = str(tmp_path / "m")
  path = model_info.save_model_info(directory, t5_config=config, vocabulary_path=vocab_path,
                                    task_feature_lengths={"inputs": 32, "targets": 40},
                                    extra={"prompt_names": ["地点"]})
  assert path == os.path.join(directory, "punified_model.json")
  with open(path, encoding="utf-8") as handle:
    saved = json.load(handle)
  assert saved["format_version"] == 1
  assert saved["vocabulary"]["file"] == "vocab/char.model"
  assert saved["vocabulary"]["kind"] == "sentencepiece"
  assert saved["task_feature_lengths"] == {"inputs": 32, "targets": 40}
  info = model_info.load_model_info(directory)
  assert info.t5_config == config
  assert info.vocabulary_path == os.path.join(directory, "vocab", "char.model")
  assert info.vocabulary_sha256 == model_info.file_sha256(vocab_path)
  assert info.extra == {"prompt_names": ["地点"]}
  assert info.vocabulary().vocab_size == config.vocab_size
  # A restart may change dropout or lengths, not the network's shape or the vocabulary.
  model_info.save_model_info(directory, t5_config=config, vocabulary_path=vocab_path,
                             task_feature_lengths={"inputs": 64, "targets": 40})
  assert model_info.load_model_info(directory).task_feature_lengths["inputs"] == 64
  wider = model_lib.T5Config(**{**vars(config), "emb_dim": 128})
  with pytest.raises(model_info.ModelInfoError, match=r"holds another network \(emb_dim: 64 -> 128\)"):
    model_info.save_model_info(directory, t5_config=wider, vocabulary_path=vocab_path,
                               task_feature_lengths={"inputs": 32, "targets": 40})
  other = tmp_path / "other.model"
  vocab_lib.train_sentencepiece(CORPUS + ["新的字"], str(other))
  with pytest.raises(model_info.ModelInfoError, match="was written with vocabulary"):
    model_info.save_model_info(directory, t5_config=config, vocabulary_path=str(other),
                               task_feature_lengths={"inputs": 32, "targets": 40})


def test_model_info_errors(tmp_path, vocab_path, config):
  directory = str(tmp_path / "m")
  with pytest.raises(FileNotFoundError, match="has no punified_model.json"):
    model_info.load_model_info(directory)
  with pytest.raises(FileNotFoundError, match="vocabulary file not found"):
    model_info.save_model_info(directory, t5_config=config, vocabulary_path="/nope.model",
                               task_feature_lengths={"inputs": 32, "targets": 40})
  with pytest.raises(model_info.ModelInfoError, match=r"task_feature_lengths\['targets'\] must"):
    model_info.save_model_info(directory, t5_config=config, vocabulary_path=vocab_path,
                               task_feature_lengths={"inputs": 32})
  model_info.save_model_info(directory, t5_config=config, vocabulary_path=vocab_path,
                             task_feature_lengths={"inputs": 32, "targets": 40})
  copy = os.path.join(directory, "vocab", "char.model")
  with open(copy, "ab") as handle:
    handle.write(b"x")
  with pytest.raises(model_info.ModelInfoError, match="the vocabulary changed after training"):
    model_info.load_model_info(directory)
  info_path = os.path.join(directory, "punified_model.json")
  with open(info_path, "w", encoding="utf-8") as handle:
    handle.write('{"format_version": 1,\n  "t5_config": }')
  with pytest.raises(model_info.ModelInfoError, match=r"punified_model.json:2: not valid JSON"):
    model_info.load_model_info(directory)
  with open(info_path, "w", encoding="utf-8") as handle:
    json.dump({"format_version": 1, "t5_config": {"vocab_size": 9, "colour": 1}}, handle)
  with pytest.raises(model_info.ModelInfoError, match=r"unknown T5Config fields \['colour'\]"):
    model_info.load_model_info(directory)


def test_model_info_reads_a_from_t5x_directory(tmp_path, vocab_path, config):
  directory = tmp_path / "converted"
  directory.mkdir()
  shutil.copy(vocab_path, directory / "vocabulary.model")
  (directory / "model.json").write_text(json.dumps(
      {"config": vars(config), "vocabulary": "vocabulary.model", "checkpoint": "checkpoints/0"}))
  info = model_info.load_model_info(str(directory))
  assert info.t5_config == config and info.task_feature_lengths is None
  assert info.vocabulary_path == str(directory / "vocabulary.model")


def test_stopping_rules_of_the_extractor(config, trained_params, sp_vocab):
  # "best" (default) and "all" (t5x's search) find the same best hypothesis; "early" (Hugging
  # Face's rule) stops when beam_size hypotheses have finished, before the overfit model's
  # longer memorised target, and so loses entities here: the trade-off the option documents.
  def extract(stopping):
    extractor = inference.Extractor(
        model_lib.Transformer(config), trained_params, sp_vocab, batch_size=BATCH_SIZE,
        max_input_length=FEATURE_LENGTHS["inputs"], max_decode_length=FEATURE_LENGTHS["targets"],
        stopping=stopping)
    return [_plain(entities) for entities in extractor.extract(texts, types=list(TYPES))]
  texts = [text for text, _ in TRAIN_EXAMPLES]
  assert extract("best") == extract("all") == EXPECTED
  assert extract("early") != EXPECTED
  with pytest.raises(ValueError, match="stopping must be one of"):
    extract("sometimes")


# ------------------------------------------------------------------------------------------
# Long outputs: greedy in two passes gives the entities of one pass.
# ------------------------------------------------------------------------------------------

def _two_pass_pair(config, sp_vocab, params):
  """The same greedy Extractor with and without the first pass; a 128-token limit, so the
  first limit is 64 (generate.cache_lengths) for short texts and two types."""
  make = lambda first_pass: inference.Extractor(
      model_lib.Transformer(config), params, sp_vocab, beam_size=1, batch_size=BATCH_SIZE,
      max_input_length=64, max_decode_length=128, first_pass=first_pass,
      output_budget=0, end_at_repeat=0)  # no limits: the runaways run to the first limit
  return make(True), make(False)


@pytest.fixture(scope="module")
def two_pass_extractors(config, sp_vocab):
  # Seed 1 runs away on one of the literal texts below and ends on the others.
  return _two_pass_pair(config, sp_vocab, random_params(config, seed=1))


def test_first_pass_limit_is_the_shortest_cache_length_that_holds_the_null_target(
    two_pass_extractors, sp_vocab):
  two_pass, _ = two_pass_extractors
  window = two_pass.plan_windows("北京大学", TYPES)[0]
  null_target = len(sp_vocab.encode(prompts.format_target([], TYPES)))
  assert two_pass._null_target_length(TYPES) == null_target
  assert null_target + len(window.text_ids) + 1 <= 64
  assert two_pass._first_pass_limit([window], 128) == 64
  long_window = two_pass.plan_windows("北京" * 40, TYPES)[0]
  assert null_target + len(long_window.text_ids) + 1 > 64
  assert two_pass._first_pass_limit([window, long_window], 128) == 128
  assert two_pass._first_pass_limit([window], 64) == 64  # no shorter cache length: one pass


def test_random_model_runs_away_and_two_passes_give_the_same_entities(two_pass_extractors):
  """A random model under the constraint often writes items until the limit: those windows
  are decoded again in full, and every entity (offsets and scores) equals one pass's."""
  two_pass, one_pass = two_pass_extractors
  texts = ["北京大学在北京。", "上海", "Apple（苹果）在上海：北京", "", "张三去了北京大学", "组织"]
  before = two_pass.stats.get("redecoded", 0)
  first = two_pass.extract(texts, types=list(TYPES))
  assert two_pass.stats.get("redecoded", 0) > before  # the case under test happened
  expected = one_pass.extract(texts, types=list(TYPES))
  assert [_plain(e) for e in first] == [_plain(e) for e in expected]
  for got, want in zip(first, expected):
    np.testing.assert_allclose([e["score"] for e in got], [e["score"] for e in want],
                               rtol=1e-5)


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(texts=st.lists(st.text(alphabet=st.sampled_from(_ALPHABET), max_size=20),
                                 min_size=1, max_size=6))
def test_two_passes_equal_one_pass_on_any_texts(two_pass_extractors, texts):
  two_pass, one_pass = two_pass_extractors
  assert ([_plain(e) for e in two_pass.extract(texts, types=list(TYPES))]
          == [_plain(e) for e in one_pass.extract(texts, types=list(TYPES))])


def test_grammar_rules_reach_the_constraint_and_keep_the_literal_entities(config, trained_params,
                                                                          sp_vocab):
  """forbid_repeats / follow_order (off by default) and end_at_repeat (3 by default) build the
  Extractor's constraint; the overfit model's outputs already follow format_target's order and
  hold no repeat, so they change nothing."""
  default = inference.Extractor(model_lib.Transformer(config), None, sp_vocab)
  assert (default._constraint.forbid_repeats, default._constraint.follow_order,
          default._constraint.end_at_repeat) == (False, False, 3)
  texts = [text for text, _ in TRAIN_EXAMPLES]
  for beam_size in (1, 4):
    ruled = inference.Extractor(model_lib.Transformer(config), trained_params, sp_vocab,
                                beam_size=beam_size, batch_size=BATCH_SIZE,
                                max_input_length=FEATURE_LENGTHS["inputs"],
                                max_decode_length=FEATURE_LENGTHS["targets"],
                                forbid_repeats=True, follow_order=True, end_at_repeat=1)
    assert ruled._constraint.forbid_repeats is True and ruled._constraint.follow_order is True
    assert (ruled.forbid_repeats, ruled.follow_order, ruled.end_at_repeat) == (True, True, 1)
    assert [_plain(entities) for entities in ruled.extract(texts, types=list(TYPES))] == EXPECTED


def test_fast_search_gives_the_entities_and_scores_of_the_allowed_search(config, trained_params, sp_vocab,
                                                                   monkeypatch):
  """search="fast" (chunks of forced and drafted tokens) reaches the decoder and gives the
  default search's entities, offsets and scores: the overfit model at greedy and beam 2, and a
  random model that runs away (greedy in two passes, the re-decoded windows included)."""
  def make(params, search, **options):
    return inference.Extractor(model_lib.Transformer(config), params, sp_vocab,
                               batch_size=BATCH_SIZE, search=search, **options)
  seen = []
  def spy(extractor):
    decode = extractor.decoder.decode
    def recording(*args, **kwargs):
      seen.append(kwargs["search"])
      return decode(*args, **kwargs)
    monkeypatch.setattr(extractor.decoder, "decode", recording)
    return extractor
  texts = [text for text, _ in TRAIN_EXAMPLES]
  cases = [(trained_params, texts, dict(beam_size=beam, max_input_length=FEATURE_LENGTHS["inputs"],
                                        max_decode_length=FEATURE_LENGTHS["targets"]))
           for beam in (1, 2)]
  cases.append((random_params(config, seed=1), ["北京大学在北京。", "上海", "Apple（苹果）在上海：北京", "张三去了北京大学"],
                dict(beam_size=1, max_input_length=64, max_decode_length=128, output_budget=0,
                     end_at_repeat=0)))
  for params, case_texts, options in cases:
    fast = spy(make(params, "fast", **options))
    default = make(params, "allowed", **options)
    got = fast.extract(case_texts, types=list(TYPES))
    want = default.extract(case_texts, types=list(TYPES))
    assert [_plain(e) for e in got] == [_plain(e) for e in want]
    for g, w in zip(got, want):
      np.testing.assert_allclose([e["score"] for e in g], [e["score"] for e in w], rtol=1e-5)
    if params is trained_params:
      assert [_plain(e) for e in got] == EXPECTED
    else:  # the case under test happened: a window ran to the first limit and was re-decoded
      assert fast.stats.get("redecoded", 0) > 0
  assert seen and set(seen) == {"fast"}
  assert make(None, "fast").search == "fast"
  assert inference.Extractor(model_lib.Transformer(config), None, sp_vocab).search == "auto"
  with pytest.raises(ValueError, match=r"search must be one of \('auto', 'allowed', 'stepwise', 'fast'\), got 'quick'"):
    make(None, "quick")


def test_auto_search_is_fast_at_greedy_and_allowed_with_beams(config, trained_params, sp_vocab,
                                                              monkeypatch):
  assert [searches.resolve("auto", beam) for beam in (1, 2, 4)] == ["fast", "allowed", "allowed"]
  assert searches.resolve("stepwise", 1) == "stepwise"
  extractor = inference.Extractor(model_lib.Transformer(config), trained_params, sp_vocab,
                                  batch_size=BATCH_SIZE, max_input_length=FEATURE_LENGTHS["inputs"],
                                  max_decode_length=FEATURE_LENGTHS["targets"])
  seen = []
  decode = extractor.decoder.decode
  def recording(*args, **kwargs):
    seen.append((kwargs["beam_size"], kwargs["search"]))
    return decode(*args, **kwargs)
  monkeypatch.setattr(extractor.decoder, "decode", recording)
  texts = [text for text, _ in TRAIN_EXAMPLES]
  for beam_size in (1, 2):
    windows = [w for i, t in enumerate(texts) for w in extractor.plan_windows(t, TYPES, i)]
    extractor.decode_windows(windows, beam_size=beam_size)
  assert sorted(set(seen)) == [(1, "fast"), (2, "allowed")]
