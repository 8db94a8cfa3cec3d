"""Tests for punified_jax.model: parameter tree, masks, packing, KV cache, dtypes, loss, gin."""

import dataclasses
import functools
import pathlib

from flax import traverse_util
import flax.linen as nn
import gin
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from punified_jax import model as model_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = model_lib.T5Config(vocab_size=40, emb_dim=32, num_heads=2, head_dim=8, mlp_dim=64,
                          num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)


pytestmark = pytest.mark.usefixtures("fast_compiles")


def _key(seed):
  # "rbg" keys: the default threefry generator takes several times longer to compile on CPU,
  # which dominates these tiny tests.
  return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def tiny_params():
  return model_lib.init_params(TINY, _key(0))


@functools.partial(jax.jit, static_argnums=0)
def _logits(config, params, enc, dec_in, dec_target, **kwargs):
  """Teacher-forced logits without dropout (jitted: eager flax is slow on CPU)."""
  return model_lib.Transformer(config).apply({"params": params}, enc, dec_in, dec_target,
                                             enable_dropout=False, **kwargs)


def _shift_right(targets):
  return jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))


# ----------------------------------------------------------------------------------------------
# Parameter tree.
# ----------------------------------------------------------------------------------------------

EXPECTED_LAYER_AXES = {
    "encoder/layers_0/attention/query/kernel": ((32, 16), ("embed", "joined_kv")),
    "encoder/layers_0/attention/key/kernel": ((32, 16), ("embed", "joined_kv")),
    "encoder/layers_0/attention/value/kernel": ((32, 16), ("embed", "joined_kv")),
    "encoder/layers_0/attention/out/kernel": ((16, 32), ("joined_kv", "embed")),
    "encoder/layers_0/mlp/wi_0/kernel": ((32, 64), ("embed", "mlp")),
    "encoder/layers_0/mlp/wi_1/kernel": ((32, 64), ("embed", "mlp")),
    "encoder/layers_0/mlp/wo/kernel": ((64, 32), ("mlp", "embed")),
    "encoder/layers_0/pre_attention_layer_norm/scale": ((32,), ("embed",)),
    "encoder/layers_0/pre_mlp_layer_norm/scale": ((32,), ("embed",)),
}


def test_parameter_tree_names_shapes_and_logical_axes(tiny_params):
  flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(tiny_params).items()}
  axes = {"/".join(k): tuple(v) for k, v in traverse_util.flatten_dict(
      model_lib.param_logical_axes(TINY), is_leaf=lambda _, x: isinstance(
          x, jax.sharding.PartitionSpec)).items()}
  # 2 x 9 encoder layer params, 2 x (4 + 4 self/cross + 3 mlp + 3 norms) decoder, 6 others.
  assert len(flat) == 2 * 9 + 2 * 14 + 6
  for name, (shape, logical) in EXPECTED_LAYER_AXES.items():
    assert flat[name].shape == shape, name
    assert axes[name] == logical, name
  expected_other = {
      "token_embedder/embedding": ((40, 32), ("vocab", "embed")),
      "encoder/relpos_bias/rel_embedding": ((2, 32), ("heads", "relpos_buckets")),
      "encoder/encoder_norm/scale": ((32,), ("embed",)),
      "decoder/relpos_bias/rel_embedding": ((2, 32), ("heads", "relpos_buckets")),
      "decoder/decoder_norm/scale": ((32,), ("embed",)),
      "decoder/logits_dense/kernel": ((32, 40), ("embed", "vocab")),
      "decoder/layers_1/self_attention/query/kernel": ((32, 16), ("embed", "joined_kv")),
      "decoder/layers_1/encoder_decoder_attention/out/kernel": ((16, 32), ("joined_kv", "embed")),
      "decoder/layers_1/pre_self_attention_layer_norm/scale": ((32,), ("embed",)),
      "decoder/layers_1/pre_cross_attention_layer_norm/scale": ((32,), ("embed",)),
      "decoder/layers_1/pre_mlp_layer_norm/scale": ((32,), ("embed",)),
      "decoder/layers_1/mlp/wo/kernel": ((64, 32), ("mlp", "embed")),
  }
  for name, (shape, logical) in expected_other.items():
    assert flat[name].shape == shape, name
    assert axes[name] == logical, name
  assert all(leaf.dtype == jnp.float32 for leaf in flat.values())
  assert set(flat) == set(axes)


def test_logits_via_embedding_has_no_lm_head():
  config = dataclasses.replace(TINY, logits_via_embedding=True)
  params = model_lib.param_shapes(config)
  assert "logits_dense" not in params["decoder"]
  enc = jnp.array([[3, 4, 1]])
  # Shapes only (traced, not compiled): the tied head is [batch, len, vocab] float32.
  logits = jax.eval_shape(functools.partial(_logits.__wrapped__, config), params, enc, enc, enc)
  assert (logits.shape, logits.dtype) == ((1, 3, 40), jnp.float32)


def test_count_params_t5_v1_1_sizes():
  base = model_lib.T5Config(vocab_size=32128, emb_dim=768, num_heads=12, head_dim=64,
                            mlp_dim=2048, num_encoder_layers=12, num_decoder_layers=12)
  # T5 v1.1 base: 247,577,856 with the 32128 vocabulary (Hugging Face reports the same); with
  # UER's 21228-entry vocabulary the two untied embedding matrices shrink to 230,835,456 (the
  # paper rounds its T5-base to "220M").
  assert model_lib.count_params(model_lib.param_shapes(base)) == 247_577_856
  uer = dataclasses.replace(base, vocab_size=21228)
  assert model_lib.count_params(model_lib.param_shapes(uer)) == 230_835_456


def test_count_params_tiny(tiny_params):
  # embed 40*32 + lm head 32*40 + 2 relpos 2*32 + 2 final norms 32
  # + encoder layers 2*(4*32*16 + 3*32*64 + 2*32) + decoder layers 2*(8*32*16 + 3*32*64 + 3*32)
  expected = 1280 + 1280 + 128 + 64 + 2 * (2048 + 6144 + 64) + 2 * (4096 + 6144 + 96)
  assert model_lib.count_params(tiny_params) == expected == 39936


# ----------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (dict(dtype="float16"), "dtype"),
    (dict(relative_attention_num_buckets=31), "even"),
    (dict(decoder_start_token_id=40), "decoder_start_token_id"),
    (dict(num_heads=0), "num_heads"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(remat_policy="sometimes"), "remat_policy"),
])
def test_config_rejects_bad_values(change, message):
  with pytest.raises(ValueError, match=message):
    dataclasses.replace(TINY, **change)


def test_config_is_hashable_and_frozen():
  assert hash(TINY) == hash(dataclasses.replace(TINY))
  with pytest.raises(dataclasses.FrozenInstanceError):
    TINY.emb_dim = 3


@pytest.mark.parametrize("size, expected", [
    ("tiny", (32, 2, 8, 64, 2, 2, 0.0, "float32")),
    ("small", (512, 6, 64, 1024, 8, 8, 0.1, "bfloat16")),
    ("base", (768, 12, 64, 2048, 12, 12, 0.1, "bfloat16")),
    ("large", (1024, 16, 64, 2816, 24, 24, 0.1, "bfloat16")),
])
def test_gin_model_sizes(size, expected):
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings([str(REPO / "gin" / "models" / f"{size}.gin")],
                                        ["VOCAB_SIZE = 21228"])
    network = gin.query_parameter("%NETWORK").scoped_configurable_fn()
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  finally:
    gin.clear_config()
  assert isinstance(network, model_lib.Transformer) and isinstance(model, model_lib.Transformer)
  c = network.config
  assert c.vocab_size == 21228
  assert (c.emb_dim, c.num_heads, c.head_dim, c.mlp_dim, c.num_encoder_layers,
          c.num_decoder_layers, c.dropout_rate, c.dtype) == expected
  assert (c.relative_attention_num_buckets, c.relative_attention_max_distance) == (32, 128)


def test_gin_requires_vocab_size():
  gin.clear_config()
  try:
    with pytest.raises(ValueError, match="VOCAB_SIZE.*gin.REQUIRED"):
      gin.parse_config_files_and_bindings([str(REPO / "gin" / "models" / "tiny.gin")], [])
  finally:
    gin.clear_config()


# ----------------------------------------------------------------------------------------------
# Relative position buckets.
# ----------------------------------------------------------------------------------------------


def test_relative_position_bucket_literals():
  relative = jnp.array([0, -1, 1, -7, -8, -20, 20, -200, 200])
  bidirectional = model_lib.relative_position_bucket(relative, bidirectional=True,
                                                     num_buckets=32, max_distance=128)
  # 16 buckets per direction; exact below 8; 8 + floor(log(d / 8) / log(16) * 8) above.
  assert bidirectional.tolist() == [0, 1, 17, 7, 8, 10, 26, 15, 31]
  causal = model_lib.relative_position_bucket(jnp.array([0, 3, -3, -15, -16, -20, -1000]),
                                              bidirectional=False, num_buckets=32,
                                              max_distance=128)
  # Future keys fall in bucket 0; exact below 16; 16 + floor(log(d / 16) / log(8) * 16) above.
  assert causal.tolist() == [0, 0, 3, 15, 16, 17, 31]


_causal_buckets = jax.jit(functools.partial(model_lib.relative_position_bucket,
                                            bidirectional=False, num_buckets=32,
                                            max_distance=128))


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(st.lists(st.integers(-3000, 0), min_size=16, max_size=16))
def test_causal_buckets_are_monotone_and_in_range(offsets):
  relative = jnp.array(sorted(offsets, reverse=True))  # distances increasing
  buckets = np.asarray(_causal_buckets(relative))
  assert ((buckets >= 0) & (buckets < 32)).all()
  assert (np.diff(buckets) >= 0).all()


# ----------------------------------------------------------------------------------------------
# Forward pass: masks, packing, dtypes, dropout.
# ----------------------------------------------------------------------------------------------


def test_logits_shape_and_dtype(tiny_params):
  enc = jnp.array([[5, 6, 7, 1, 0], [8, 9, 1, 0, 0]])
  target = jnp.array([[10, 11, 1], [12, 1, 0]])
  logits = _logits(TINY, tiny_params, enc, _shift_right(target), target)
  assert logits.shape == (2, 3, 40) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def _numpy_t5_logits(params, enc_tokens, dec_inputs, config):
  """Independent numpy reference of the T5 v1.1 forward pass for one unpadded example."""
  p = jax.tree_util.tree_map(np.asarray, params)
  heads, head_dim = config.num_heads, config.head_dim

  def rms_norm(x, scale):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * scale

  def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

  def bucket(relative, bidirectional):
    buckets, result = 32, np.zeros_like(relative)
    distance = -relative
    if bidirectional:
      buckets //= 2
      result = np.where(distance < 0, buckets, 0)
      distance = np.abs(distance)
    else:
      distance = np.maximum(distance, 0)
    exact = buckets // 2
    with np.errstate(divide="ignore"):
      far = exact + (np.log(distance / exact + np.finfo(np.float32).eps) / np.log(128 / exact)
                     * (buckets - exact)).astype(int)
    return result + np.where(distance < exact, distance, np.minimum(far, buckets - 1))

  def relpos(table, length, bidirectional):
    positions = np.arange(length)
    return table[:, bucket(positions[None, :] - positions[:, None], bidirectional)]

  def attention(x_q, x_kv, weights, bias, causal):
    split = lambda x, name: (x @ weights[name]["kernel"]).reshape(len(x), heads, head_dim)
    q, k, v = split(x_q, "query"), split(x_kv, "key"), split(x_kv, "value")
    logits = np.einsum("qhd,khd->hqk", q, k) + (0 if bias is None else bias)
    if causal:
      logits = np.where(np.tril(np.ones((len(x_q), len(x_kv)), bool)), logits, -1e10)
    weights_qk = np.exp(logits - logits.max(-1, keepdims=True))
    weights_qk /= weights_qk.sum(-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", weights_qk, v).reshape(len(x_q), heads * head_dim)
    return out @ weights["out"]["kernel"]

  def mlp(x, weights):
    hidden = gelu_tanh(x @ weights["wi_0"]["kernel"]) * (x @ weights["wi_1"]["kernel"])
    return hidden @ weights["wo"]["kernel"]

  embedding = p["token_embedder"]["embedding"]
  encoder, decoder = p["encoder"], p["decoder"]
  x = embedding[enc_tokens]
  bias = relpos(encoder["relpos_bias"]["rel_embedding"], len(enc_tokens), True)
  for index in range(config.num_encoder_layers):
    layer = encoder[f"layers_{index}"]
    h = rms_norm(x, layer["pre_attention_layer_norm"]["scale"])
    x = x + attention(h, h, layer["attention"], bias, causal=False)
    x = x + mlp(rms_norm(x, layer["pre_mlp_layer_norm"]["scale"]), layer["mlp"])
  encoded = rms_norm(x, encoder["encoder_norm"]["scale"])
  y = embedding[dec_inputs]
  bias = relpos(decoder["relpos_bias"]["rel_embedding"], len(dec_inputs), False)
  for index in range(config.num_decoder_layers):
    layer = decoder[f"layers_{index}"]
    h = rms_norm(y, layer["pre_self_attention_layer_norm"]["scale"])
    y = y + attention(h, h, layer["self_attention"], bias, causal=True)
    h = rms_norm(y, layer["pre_cross_attention_layer_norm"]["scale"])
    y = y + attention(h, encoded, layer["encoder_decoder_attention"], None, causal=False)
    y = y + mlp(rms_norm(y, layer["pre_mlp_layer_norm"]["scale"]), layer["mlp"])
  y = rms_norm(y, decoder["decoder_norm"]["scale"])
  return y @ decoder["logits_dense"]["kernel"]


def test_forward_matches_numpy_reference(tiny_params):
  enc = jnp.array([[5, 6, 7, 1]])
  target = jnp.array([[10, 11, 1]])
  logits = _logits(TINY, tiny_params, enc, _shift_right(target), target)
  reference = _numpy_t5_logits(tiny_params, np.array([5, 6, 7, 1]), np.array([0, 10, 11]), TINY)
  np.testing.assert_allclose(logits[0], reference, atol=1e-4, rtol=1e-4)


def test_padding_does_not_change_real_positions(tiny_params):
  enc = jnp.array([[5, 6, 7, 1]])
  target = jnp.array([[10, 11, 1]])
  short = _logits(TINY, tiny_params, enc, _shift_right(target), target)
  padded_enc = jnp.array([[5, 6, 7, 1, 0, 0, 0]])
  padded_target = jnp.array([[10, 11, 1, 0, 0]])
  long = _logits(TINY, tiny_params, padded_enc, _shift_right(padded_target), padded_target)
  np.testing.assert_allclose(long[:, :3], short, atol=1e-5)


def _split_packed(features):
  """(positional token arrays, keyword packing arrays) for `_logits`."""
  names = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
  return [features[name] for name in names], {
      k: v for k, v in features.items() if k not in names}


# Two examples packed into one row (plus one padding position), as seqio's
# EncDecFeatureConverter(pack=True) lays them out: decoder inputs restart with 0 at each
# segment, positions restart at 0.  Each example alone has the [1, 4] / [1, 3] shapes used by
# the other tests, so the compiled programs are shared.
ENC_A, TGT_A = [5, 6, 7, 1], [10, 11, 1]
ENC_B, TGT_B = [8, 9, 4, 1], [12, 13, 1]
PACKED = dict(
    encoder_input_tokens=jnp.array([ENC_A + ENC_B + [0]]),
    decoder_input_tokens=jnp.array([[0, 10, 11, 0, 12, 13, 0]]),
    decoder_target_tokens=jnp.array([TGT_A + TGT_B + [0]]),
    encoder_segment_ids=jnp.array([[1, 1, 1, 1, 2, 2, 2, 2, 0]]),
    decoder_segment_ids=jnp.array([[1, 1, 1, 2, 2, 2, 0]]),
    encoder_positions=jnp.array([[0, 1, 2, 3, 0, 1, 2, 3, 0]]),
    decoder_positions=jnp.array([[0, 1, 2, 0, 1, 2, 0]]),
)


def test_packed_segments_equal_each_alone(tiny_params):
  tokens, packing = _split_packed(PACKED)
  packed_logits = _logits(TINY, tiny_params, *tokens, **packing)
  for example, (enc, tgt) in enumerate([(ENC_A, TGT_A), (ENC_B, TGT_B)]):
    alone = _logits(TINY, tiny_params, jnp.array([enc]), _shift_right(jnp.array([tgt])),
                    jnp.array([tgt]))
    np.testing.assert_allclose(packed_logits[0, 3 * example:3 * example + 3], alone[0],
                               atol=1e-5)
  # With one segment id for both, the second example would see the first: the test can fail.
  merged = dict(packing, encoder_segment_ids=(tokens[0] > 0).astype(jnp.int32),
                decoder_segment_ids=(tokens[2] > 0).astype(jnp.int32))
  leaky = _logits(TINY, tiny_params, *tokens, **merged)
  assert np.abs(np.asarray(leaky[0, 3:6] - packed_logits[0, 3:6])).max() > 1e-3


def test_bfloat16_activations_keep_float32_params(tiny_params):
  config = dataclasses.replace(TINY, dtype="bfloat16")
  shapes = model_lib.param_shapes(config)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype("float32")}
  params = tiny_params  # The tree does not depend on the activation dtype.
  enc = jnp.array([[5, 6, 7, 1]])
  target = jnp.array([[10, 11, 1]])
  encoded = jax.jit(lambda p: model_lib.Transformer(config).apply(
      {"params": p}, enc, enable_dropout=False, method=model_lib.Transformer.encode))(params)
  assert encoded.dtype == jnp.bfloat16
  logits = _logits(config, params, enc, _shift_right(target), target)
  assert logits.dtype == jnp.float32
  reference = _logits(TINY, params, enc, _shift_right(target), target)
  # Same parameters: bfloat16 activations agree with float32 to bfloat16 precision.
  np.testing.assert_allclose(logits, reference, atol=0.1)


def test_dropout_only_in_training(tiny_params):
  config = dataclasses.replace(TINY, dropout_rate=0.5)
  net = model_lib.Transformer(config)
  enc = jnp.array([[5, 6, 7, 1]])
  target = jnp.array([[10, 11, 1]])
  args = (enc, _shift_right(target), target)

  @jax.jit
  def eval_and_train(params, rng):
    return (net.apply({"params": params}, *args, enable_dropout=False),
            net.apply({"params": params}, *args, rngs={"dropout": rng}))

  # The tree does not depend on the dropout rate: reuse the tiny parameters.
  eval_a, train_a = eval_and_train(tiny_params, _key(1))
  eval_b, train_b = eval_and_train(tiny_params, _key(2))
  np.testing.assert_array_equal(eval_a, eval_b)
  np.testing.assert_allclose(eval_a, _logits(TINY, tiny_params, *args), atol=1e-6)
  assert np.abs(np.asarray(train_a - eval_a)).max() > 1e-3
  assert np.abs(np.asarray(train_a - train_b)).max() > 1e-3


def test_decoder_start_token_replaces_segment_starts(tiny_params):
  config = dataclasses.replace(TINY, decoder_start_token_id=3)
  tokens, packing = _split_packed(PACKED)
  enc, seqio_inputs, target = tokens
  # Segment starts become 3; the padding position (segment 0) keeps its 0.
  explicit_inputs = jnp.array([[3, 10, 11, 3, 12, 13, 0]])
  replaced = _logits(config, tiny_params, enc, seqio_inputs, target, **packing)
  explicit = _logits(config, tiny_params, enc, explicit_inputs, target, **packing)
  np.testing.assert_allclose(replaced, explicit, atol=1e-6)
  # The same parameters under start id 0 see the zeros: different logits.
  plain = _logits(TINY, tiny_params, enc, seqio_inputs, target, **packing)
  assert np.abs(np.asarray(plain[0, :6] - replaced[0, :6])).max() > 1e-3


def test_segment_start_mask_from_segment_ids_only():
  target = jnp.array([[7, 8, 9, 7, 8, 0]])
  segments = jnp.array([[1, 1, 2, 2, 2, 0]])
  starts = model_lib.segment_start_mask(target, segments, None)
  assert starts.tolist() == [[True, False, True, False, False, False]]
  assert model_lib.segment_start_mask(target, None, None).tolist() == [
      [True, False, False, False, False, False]]


def test_remat_matches_plain_forward_and_gradients(tiny_params):
  enc = jnp.array([[5, 6, 7, 1]])
  target = jnp.array([[10, 11, 1]])
  # One layer per stack keeps the two backward-pass compiles small: drop layers_1.
  one_layer = dataclasses.replace(TINY, num_encoder_layers=1, num_decoder_layers=1)
  params = {stack: ({k: v for k, v in tree.items() if k != "layers_1"}
                    if stack != "token_embedder" else tree)
            for stack, tree in tiny_params.items()}

  def loss(params, config):
    logits = _logits(config, params, enc, _shift_right(target), target)
    return model_lib.compute_loss(logits, target, None)[0]

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  plain_loss, plain_grads = value_and_grad(params, one_layer)
  # One policy only: each one is a separate (slow) compile of the backward pass.
  config = dataclasses.replace(one_layer, remat_policy="dots")
  # The layers really are checkpointed (the rest of the test would pass without it).
  jaxpr = lambda c: str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, c))
  assert "remat" in jaxpr(config) and "remat" not in jaxpr(one_layer)
  remat_loss, remat_grads = value_and_grad(params, config)
  np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                         remat_grads, plain_grads)


def test_runs_under_logical_axis_rules_and_mesh(tiny_params):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  rules = (("batch", "data"), ("vocab", None), ("embed", None), ("mlp", None),
           ("heads", None), ("kv", None), ("length", None), ("joined_kv", None))
  enc = jnp.array([[5, 6, 7, 1]])
  target = jnp.array([[10, 11, 1]])
  reference = _logits(TINY, tiny_params, enc, _shift_right(target), target)
  with mesh, nn.logical_axis_rules(rules):
    sharded = jax.jit(lambda p: _logits(TINY, p, enc, _shift_right(target), target))(
        tiny_params)
  np.testing.assert_allclose(sharded, reference, atol=1e-6)


@pytest.mark.parametrize("tokens, error", [
    (jnp.array([5, 6, 1]), ValueError),
    (jnp.array([[5.0, 6.0, 1.0]]), TypeError),
])
def test_malformed_token_arrays_are_rejected(tiny_params, tokens, error):
  target = jnp.array([[10, 11, 1]])
  with pytest.raises(error, match="encoder_input_tokens"):
    _logits(TINY, tiny_params, tokens, _shift_right(target), target)


def test_decode_without_targets_outside_cache_mode_is_rejected(tiny_params):
  net = model_lib.Transformer(TINY)
  enc = jnp.array([[5, 6, 1]])
  encoded = jnp.zeros((1, 3, 32))
  with pytest.raises(ValueError, match="decoder_target_tokens is required"):
    jax.eval_shape(lambda: net.apply({"params": tiny_params}, encoded, enc,
                                     jnp.array([[0, 10]]), enable_dropout=False,
                                     method=model_lib.Transformer.decode))


# ----------------------------------------------------------------------------------------------
# Incremental decoding with the KV cache.
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 3))
def _init_caches(config, params, enc, max_decode_length):
  """The cache-initialising decode call: {"cache": ..., "encoder_cache": ...}."""
  net = model_lib.Transformer(config)
  encoded = net.apply({"params": params}, enc, enable_dropout=False,
                      method=model_lib.Transformer.encode)
  _, variables = net.apply({"params": params}, encoded, enc,
                           jnp.zeros((enc.shape[0], 1), jnp.int32), enable_dropout=False,
                           decode=True, max_decode_length=max_decode_length,
                           method=model_lib.Transformer.decode,
                           mutable=["cache", "encoder_cache"])
  return variables


@pytest.mark.parametrize("start_id", [0, 3])
def test_cached_steps_equal_full_forward(tiny_params, start_id):
  config = dataclasses.replace(TINY, decoder_start_token_id=start_id)
  params = tiny_params
  net = model_lib.Transformer(config)
  enc = jnp.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
  target = jnp.array([[11, 12, 13, 14, 1], [15, 16, 17, 18, 19]])
  full = _logits(config, params, enc, _shift_right(target), target)

  variables = _init_caches(config, params, enc, 7)
  cache = variables["cache"]
  assert cache["decoder"]["layers_0"]["self_attention"]["cached_key"].shape == (2, 2, 7, 8)  # heads-first
  assert variables["encoder_cache"]["decoder"]["layers_1"]["encoder_decoder_attention"][
      "cached_key"].shape == (2, 2, 6, 8)

  @jax.jit
  def step(token, cache):
    logits, updated = net.apply(
        {"params": params, "cache": cache, "encoder_cache": variables["encoder_cache"]},
        None, enc, token, enable_dropout=False, decode=True,
        method=model_lib.Transformer.decode, mutable=["cache"])
    return logits, updated["cache"]

  token = jnp.full((2, 1), start_id, jnp.int32)
  for position in range(5):
    logits, cache = step(token, cache)
    assert int(cache["decoder"]["cache_index"]) == position + 1
    np.testing.assert_allclose(logits[:, 0], full[:, position], atol=1e-5)
    token = target[:, position:position + 1]


def test_cache_rejects_multi_token_steps(tiny_params):
  net = model_lib.Transformer(TINY)
  enc = jnp.array([[5, 6, 1]])
  variables = jax.eval_shape(lambda p: _init_caches(TINY, p, enc, 4), tiny_params)
  with pytest.raises(ValueError, match="one token per call"):
    jax.eval_shape(lambda v: net.apply(
        {"params": tiny_params, **v}, None, enc, jnp.zeros((1, 2), jnp.int32),
        enable_dropout=False, decode=True, method=model_lib.Transformer.decode,
        mutable=["cache"]), variables)


def test_packed_inputs_cannot_be_decoded_incrementally(tiny_params):
  net = model_lib.Transformer(TINY)
  enc = jnp.array([[5, 6, 1]])
  with pytest.raises(ValueError, match="packed"):
    jax.eval_shape(lambda: net.apply(
        {"params": tiny_params}, None, enc, jnp.zeros((1, 1), jnp.int32),
        encoder_segment_ids=jnp.ones((1, 3), jnp.int32), enable_dropout=False, decode=True,
        max_decode_length=4, method=model_lib.Transformer.decode,
        mutable=["cache", "encoder_cache"]))


# ----------------------------------------------------------------------------------------------
# Loss.
# ----------------------------------------------------------------------------------------------


def test_loss_literal_values():
  logits = jnp.zeros((1, 2, 3))
  targets = jnp.array([[1, 2]])
  weights = jnp.array([[1.0, 0.0]])
  loss, z_loss, weight = model_lib.compute_loss(logits, targets, weights, z_loss=0.0)
  np.testing.assert_allclose([loss, z_loss, weight], [np.log(3), 0.0, 1.0], rtol=1e-6)
  loss, z_loss, _ = model_lib.compute_loss(logits, targets, weights, z_loss=1e-4)
  np.testing.assert_allclose(z_loss, 1e-4 * np.log(3) ** 2, rtol=1e-5)
  np.testing.assert_allclose(loss, np.log(3) + 1e-4 * np.log(3) ** 2, rtol=1e-6)
  # Label smoothing 0.3 over 3 classes: target (0.15, 0.7, 0.15); uniform prediction gives
  # log 3 minus the target entropy 0.7 ln(1/0.7) + 0.3 ln(1/0.15) = 0.818808.
  loss, _, _ = model_lib.compute_loss(logits, targets, weights, z_loss=0.0,
                                      label_smoothing=0.3)
  np.testing.assert_allclose(loss, np.log(3) - 0.818808, atol=1e-5)


def test_loss_with_smoothing_is_zero_at_the_smoothed_target():
  smoothed = jnp.log(jnp.array([[[0.15, 0.7, 0.15]]]))
  loss, _, _ = model_lib.compute_loss(smoothed, jnp.array([[1]]), None, z_loss=0.0,
                                      label_smoothing=0.3)
  np.testing.assert_allclose(loss, 0.0, atol=1e-5)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(st.integers(0, 2**31 - 1))
def test_loss_equals_weighted_negative_log_likelihood(seed):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32) * 3
  targets = rng.integers(0, 5, size=(2, 3))
  weights = rng.integers(0, 2, size=(2, 3)).astype(np.float32)
  loss, _, weight = model_lib.compute_loss(jnp.asarray(logits), jnp.asarray(targets),
                                           jnp.asarray(weights), z_loss=0.0)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, (nll * weights).sum(), rtol=1e-5, atol=1e-5)
  assert float(weight) == weights.sum()


@pytest.mark.parametrize("logits, targets, weights, message", [
    (jnp.zeros((1, 2, 3)), jnp.zeros((1, 3), jnp.int32), None, "disagree"),
    (jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), jnp.int32), jnp.ones((2, 1)), "weights"),
])
def test_loss_rejects_mismatched_shapes(logits, targets, weights, message):
  with pytest.raises(ValueError, match=message):
    model_lib.compute_loss(logits, targets, weights)


def test_loss_rejects_bad_label_smoothing():
  with pytest.raises(ValueError, match="label_smoothing"):
    model_lib.compute_loss(jnp.zeros((1, 1, 3)), jnp.zeros((1, 1), jnp.int32), None,
                           label_smoothing=1.0)
