"""Our Hopper (sm_90a) kernels, cpp/sm90/: where flash_mha runs them, and what they compute.

CPU: the dispatch rules (the C ABI's jfa_fwd_uses_sm90 and jfa_bwd_uses_sm90) through both
bindings. They hold whichever Hopper kernels are linked: a build without them covers nothing,
one with them the dtypes and head dims has_sm90_kernel names (the kernels look at nothing else).
GPU, on compute capability 9.0 with a build whose Hopper forward covers the case: the forward
with JAX_FLASH_ATTN_SM90=1 (the Hopper path) and =0 (FlashAttention-2) on the same inputs,
out and lse, against the float32 reference by test_gpu.py's tolerance rule; and gradients
through the Hopper kernels (our backward where it covers the head dim, else FlashAttention-2's,
fed the Hopper forward's out and lse).

The C library reads JAX_FLASH_ATTN_SM90 at every call, so one jitted function serves both
paths. XLA runs the handler when the computation runs, not when the call returns: each run
is waited for before the variable changes again. (Our handlers declare no command-buffer
trait, so XLA does not capture them into a CUDA graph, which would freeze the choice.)
"""

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import importable_extensions, requires_gpu
from test_gpu import (assert_close, assert_lse_close, check_features, need_kernel, poison_device_memory,
                      random_qkv)

ENV = "JAX_FLASH_ATTN_SM90"
DTYPE_NAMES = ("float16", "bfloat16")
BUCKETS = (32, 64, 96, 128, 192, 256)


def ext(flash):
    return flash._binding.extension


# --- the rule (CPU) ---------------------------------------------------------------------------

# (batch, seqlen_q, seqlen_k, heads, heads_k) and options as uses_sm90 takes them.
RULE_SHAPES = [(1, 128, 128, 1, 1), (2, 1, 1, 4, 4), (2, 77, 1000, 8, 2), (3, 1000, 300, 8, 1),
               (1, 2048, 2048, 16, 16)]
RULE_OPTIONS = [dict(), dict(is_causal=True), dict(window_left=32, window_right=16), dict(window_left=0, window_right=0),
                dict(window_left=-1, window_right=8), dict(window_left=2**40, window_right=2**40),  # unbounded
                dict(is_causal=True, window_left=128)]


def uses(e, dtype, shape, head_dim, cc, **options):
    """uses_sm90 with its options as keywords (the bindings take them positionally)."""
    o = dict(is_causal=False, window_left=-1, window_right=-1, softcap=0.0, has_alibi=False, is_varlen=False,
             backward=False, deterministic=False)
    o.update(options)
    return e.uses_sm90(dtype, *shape, head_dim, *cc, o["is_causal"], o["window_left"], o["window_right"],
                       o["softcap"], o["has_alibi"], o["is_varlen"], o["backward"], o["deterministic"])


@pytest.mark.parametrize("cc", [(8, 0), (8, 6), (8, 9), (9, 1), (10, 0), (12, 0)], ids=lambda c: f"cc{c[0]}.{c[1]}")
def test_rule_other_gpus_run_flashattention2(flash, cc):
    """sm_90a code runs on compute capability 9.0 only."""
    e = ext(flash)
    for dtype in DTYPE_NAMES:
        for head_dim in BUCKETS:
            for shape in RULE_SHAPES:
                assert uses(e, dtype, shape, head_dim, cc) is False, (dtype, head_dim, shape)
                assert uses(e, dtype, shape, head_dim, cc, backward=True) is False, (dtype, head_dim, shape)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_rule_on_hopper_is_the_builds_coverage(flash, dtype):
    e = ext(flash)
    for head_dim in range(8, 257, 8):
        has = e.has_sm90_kernel(dtype, head_dim)
        assert isinstance(has, bool)
        has_bwd = e.has_sm90_kernel(dtype, head_dim, True)
        assert isinstance(has_bwd, bool)
        assert has or not has_bwd, head_dim  # the backward is used only after our forward
        for shape in RULE_SHAPES:
            for options in RULE_OPTIONS:
                assert uses(e, dtype, shape, head_dim, (9, 0), **options) is has, (head_dim, shape, options)
                assert uses(e, dtype, shape, head_dim, (9, 0), backward=True, **options) is has_bwd, (
                    head_dim, shape, options)
                # A deterministic backward is FlashAttention-2's; the forward ignores the flag.
                assert uses(e, dtype, shape, head_dim, (9, 0), backward=True, deterministic=True, **options) is False
                assert uses(e, dtype, shape, head_dim, (9, 0), deterministic=True, **options) is has


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_hopper_coverage_is_the_documented_one(flash, dtype):
    """With our Hopper kernels linked: the forward and the backward cover head dims 64, 128 and 256
    (README, "The Hopper kernels"); without them, nothing."""
    e = ext(flash)
    fwd = [d for d in range(8, 257, 8) if e.has_sm90_kernel(dtype, d)]
    bwd = [d for d in range(8, 257, 8) if e.has_sm90_kernel(dtype, d, True)]
    assert (fwd, bwd) in (([], []), ([64, 128, 256], [64, 128, 256])), (fwd, bwd, e.build_config())


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_rule_alibi_softcap_varlen_run_flashattention2(flash, dtype):
    e = ext(flash)
    for head_dim in BUCKETS:
        for shape in RULE_SHAPES:
            for options in (dict(has_alibi=True), dict(softcap=5.0), dict(softcap=1e-3), dict(is_varlen=True),
                            dict(is_causal=True, has_alibi=True)):
                assert uses(e, dtype, shape, head_dim, (9, 0), **options) is False, (head_dim, shape, options)
                assert uses(e, dtype, shape, head_dim, (9, 0), backward=True, **options) is False, (
                    head_dim, shape, options)


def test_rule_refuses_what_the_c_abi_refuses(flash):
    """Shapes jfa_check_shape rejects (and head dims flash_mha would pad) never take the Hopper path."""
    e = ext(flash)
    for bad_shape, head_dim in [((1, 128, 128, 4, 3), 128), ((0, 128, 128, 1, 1), 128), ((1, 0, 128, 1, 1), 128),
                                ((1, 128, 128, 1, 1), 100), ((1, 128, 128, 1, 1), 264), ((1, 128, 128, 1, 1), 0)]:
        assert uses(e, "bfloat16", bad_shape, head_dim, (9, 0)) is False, (bad_shape, head_dim)
        assert uses(e, "bfloat16", bad_shape, head_dim, (9, 0), backward=True) is False, (bad_shape, head_dim)
    for options in (dict(window_left=-2), dict(softcap=-1.0), dict(softcap=float("nan")), dict(softcap=1e300)):
        assert uses(e, "bfloat16", (1, 128, 128, 1, 1), 128, (9, 0), **options) is False, options
    for head_dim in (0, 4, 100, 264, -8):
        assert e.has_sm90_kernel("bfloat16", head_dim) is False, head_dim
        assert e.has_sm90_kernel("bfloat16", head_dim, True) is False, head_dim


def test_build_config_names_the_hopper_kernels(flash):
    e = ext(flash)
    covered = [f"{t}/{d}" for t in DTYPE_NAMES for d in BUCKETS if e.has_sm90_kernel(t, d)]
    covered_bwd = [f"{t}/{d}" for t in DTYPE_NAMES for d in BUCKETS if e.has_sm90_kernel(t, d, True)]
    config = e.build_config()
    suffix = ("; sm90 forward: " + " ".join(covered) if covered else "") + (
        "; sm90 backward: " + " ".join(covered_bwd) if covered_bwd else "")
    if suffix:
        assert config.endswith(suffix), config
    else:
        assert "sm90" not in config, config


def test_bindings_agree_on_the_rule():
    exts = importable_extensions()
    if len(exts) < 2:
        pytest.skip(f"needs both bindings' packages, found {sorted(exts)}")
    cpp, rust = exts.values()
    if cpp.build_config() != rust.build_config():
        pytest.skip(f"packages built from different kernel sets: {cpp.build_config()!r} vs {rust.build_config()!r}")
    for dtype in DTYPE_NAMES:
        for head_dim in (8, 64, 100, 128, 256, 264):
            assert cpp.has_sm90_kernel(dtype, head_dim) == rust.has_sm90_kernel(dtype, head_dim)
            assert cpp.has_sm90_kernel(dtype, head_dim, True) == rust.has_sm90_kernel(dtype, head_dim, True)
            for cc in ((8, 0), (9, 0), (9, 1), (10, 0), (2**40, 0)):
                for shape in RULE_SHAPES:
                    for options in RULE_OPTIONS + [dict(has_alibi=True), dict(softcap=3.0), dict(is_varlen=True),
                                                   dict(backward=True), dict(backward=True, deterministic=True)]:
                        assert uses(cpp, dtype, shape, head_dim, cc, **options) == uses(
                            rust, dtype, shape, head_dim, cc, **options), (dtype, head_dim, cc, shape, options)


# --- the kernel (GPU) -------------------------------------------------------------------------

@contextlib.contextmanager
def sm90_env(value):
    """JAX_FLASH_ATTN_SM90=value (None: unset) for the calls inside, which must finish inside."""
    old = os.environ.get(ENV)
    _set_env(value)
    try:
        yield
    finally:
        _set_env(old)


@contextlib.contextmanager
def scratch_never_refused(flash):
    """No Hopper launch inside may run its last round uncut for want of XLA's scratch (the
    bindings once asked for an alignment XLA refuses, and every cut silently ran uncut)."""
    before = flash.launch_counts()["uncut_for_scratch"]
    yield
    assert flash.launch_counts()["uncut_for_scratch"] == before, "a launch got too little scratch"


def _set_env(value):
    if value is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = value


def device_cc():
    capability = getattr(jax.devices()[0], "compute_capability", None)
    return tuple(int(x) for x in str(capability).split(".")[:2]) if capability else None


def need_sm90(flash, dtype, shape, **options):
    """Skips unless this GPU and build run the case on the Hopper forward (and have
    FlashAttention-2's kernels for it: the backward, and the other path)."""
    name, head_dim = jnp.dtype(dtype).name, shape[-1]
    need_kernel(flash, dtype, head_dim)
    if device_cc() != (9, 0):
        pytest.skip(f"the Hopper forward runs on compute capability 9.0; {jax.devices()[0]} has {device_cc()}")
    if not ext(flash).has_sm90_kernel(name, head_dim):
        pytest.skip(f"this build's Hopper forward has no {name}/{head_dim} ({flash.build_config()})")
    window = options.get("window_size", (-1, -1))
    assert uses(ext(flash), name, shape[:5], head_dim, (9, 0), is_causal=options.get("is_causal", False),
                window_left=window[0], window_right=window[1]), "the rule sends this case to FlashAttention-2"


# (id, (batch, seqlen_q, seqlen_k, heads, heads_k), options)
CASES = [
    ("sq1", (2, 1, 1, 4, 4), {}),
    ("sq77", (2, 77, 77, 4, 4), {}),
    ("sq128", (2, 128, 128, 4, 4), {}),
    ("sq300-sk1000", (2, 300, 1000, 4, 4), {}),
    ("sq1000-sk300", (2, 1000, 300, 4, 4), {}),
    ("sq1-sk2048", (3, 1, 2048, 4, 4), {}),
    ("sq2048", (1, 2048, 2048, 4, 4), {}),
    ("causal-sq77", (2, 77, 77, 4, 4), dict(is_causal=True)),
    ("causal-sq128", (2, 128, 128, 4, 4), dict(is_causal=True)),
    ("causal-sq300-sk1000", (2, 300, 1000, 4, 4), dict(is_causal=True)),
    ("causal-sq1000-sk300", (2, 1000, 300, 4, 4), dict(is_causal=True)),  # 700 rows see no key
    ("causal-sq2048", (1, 2048, 2048, 4, 4), dict(is_causal=True)),
    ("window-32-16", (2, 300, 1000, 4, 4), dict(window_size=(32, 16))),
    ("window-left", (2, 1000, 1000, 4, 4), dict(window_size=(256, -1))),
    ("window-right", (2, 300, 300, 4, 4), dict(window_size=(-1, 8))),
    ("window-diagonal", (2, 300, 300, 4, 4), dict(window_size=(0, 0))),
    ("window-empty-rows", (2, 300, 77, 4, 4), dict(window_size=(0, 0))),  # rows below 223 see no key
    ("window-wider-than-keys", (2, 128, 77, 4, 4), dict(window_size=(500, 500))),  # normalized to unbounded
    ("causal-window", (2, 1000, 1000, 4, 4), dict(is_causal=True, window_size=(128, 0))),
    ("gqa-causal", (2, 1000, 1000, 8, 2), dict(is_causal=True)),
    ("mqa-window", (2, 300, 1000, 8, 1), dict(window_size=(64, 0))),
    ("batch4-sq300", (4, 300, 300, 2, 2), {}),
    # 512 query tiles, more than an H100 has SMs: the persistent forward walks several per CTA.
    ("tiles-over-sms-gqa", (4, 1000, 1000, 16, 4), {}),
    # From 4096 keys up the forward takes other kernels (O from registers; at d 64, 192-key blocks;
    # at d 128, unmasked calls over 4096 keys take 176-key blocks; at d 256, causal calls take 80-key
    # blocks as unmasked ones do at any length).
    ("sq300-sk4500", (1, 300, 4500, 4, 2), {}),
    ("causal-sq700-sk4500", (1, 700, 4500, 4, 1), dict(is_causal=True)),
    # Unmasked calls whose last round of tiles would leave SMs idle cut those tiles into pieces of
    # their keys (on a 132-SM H100: 28 tiles after a whole round, in halves; 32 tiles in quarters;
    # sq1-sk2048, sq2048 and sq300-sk4500 above are cut too).
    ("cut-last-round", (1, 1216, 2048, 16, 4), {}),
    ("cut-in-quarters", (1, 500, 4500, 8, 2), {}),
    # At d 64 unmasked calls of 512 queries or more take three consumer warpgroups (192-row
    # tiles): sq1000-sk300 and sq2048 above, and here a partial last tile, more tiles than SMs
    # and a cut; masked ones from 2048 queries (causal-sq2048, and here from a queue).
    ("tiles-of-192-rows", (1, 2100, 4500, 16, 4), {}),
    ("causal-tiles-of-192-rows", (2, 2100, 2100, 16, 4), dict(is_causal=True)),
]
CASES_BY_ID = {c[0]: c for c in CASES}
# Every dtype and head dim, on the cases that exercise the most code.
WIDE_CASES = ["sq77", "sq1000-sk300", "causal-sq1000-sk300", "window-empty-rows", "gqa-causal", "sq2048",
              "tiles-over-sms-gqa", "sq300-sk4500", "causal-sq700-sk4500", "cut-last-round", "tiles-of-192-rows",
              "causal-sq2048", "causal-tiles-of-192-rows"]


def check_both_paths(flash, rng, dtype, head_dim, case):
    """out and lse of the Hopper path and of FlashAttention-2, on the same inputs, against
    the float32 reference; rows that see no key must be exactly 0 (out) and +inf (lse)."""
    _, shape, options = case
    shape = (*shape, head_dim)
    need_sm90(flash, dtype, shape, **options)
    q, k, v = random_qkv(rng, dtype, *shape)
    kernel = jax.jit(lambda q, k, v: flash.flash_mha(q, k, v, return_lse=True, **options))
    ref_out, ref_lse = jax.jit(lambda *a: flash.attention_reference(*a, **options))(
        *(x.astype(jnp.float32) for x in (q, k, v)))
    plain_out, plain_lse = jax.jit(lambda *a: flash.attention_reference(*a, compute_dtype=dtype, **options))(q, k, v)
    empty = np.isinf(np.asarray(ref_lse))  # [batch, heads, seqlen_q]
    results = {}
    for path, value in (("sm90", "1"), ("fa2", "0")):
        poison_device_memory(4 * q.size * 4)
        with sm90_env(value), scratch_never_refused(flash):
            out, lse = jax.block_until_ready(kernel(q, k, v))
        assert out.shape == q.shape and out.dtype == q.dtype
        assert_close(f"{path} out", out, ref_out, plain_out)
        assert_lse_close(f"{path} lse", lse, ref_lse, plain_lse)
        rows = np.asarray(out, np.float32).transpose(0, 2, 1, 3)[empty]
        assert not rows.size or np.all(rows == 0), f"{path}: rows that see no key must be zero"
        results[path] = out, lse
    return results


@requires_gpu
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_reference(flash, rng, case):
    check_both_paths(flash, rng, jnp.bfloat16, 128, case)


@requires_gpu
@pytest.mark.parametrize("case", WIDE_CASES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
def test_dtypes_and_head_dims_match_reference(flash, rng, dtype, head_dim, case):
    check_both_paths(flash, rng, dtype, head_dim, CASES_BY_ID[case])


@requires_gpu
def test_env_var_switches_the_path(flash, rng):
    """Different kernels accumulate in different orders: over 2048 x 2048 keys some output
    bit differs. If none does, JAX_FLASH_ATTN_SM90 did not change the kernel that ran."""
    results = check_both_paths(flash, rng, jnp.bfloat16, 128, CASES_BY_ID["sq2048"])
    sm90, fa2 = (np.asarray(results[p][0], np.float32) for p in ("sm90", "fa2"))
    assert not np.array_equal(sm90, fa2), "bit-identical outputs: both runs took the same path"


@requires_gpu
def test_unset_env_var_takes_the_hopper_path(flash, rng):
    """Unset is on: the same output as JAX_FLASH_ATTN_SM90=1 (each forward is deterministic)."""
    _, shape, options = CASES_BY_ID["causal-sq2048"]
    shape = (*shape, 128)
    need_sm90(flash, jnp.bfloat16, shape, **options)
    q, k, v = random_qkv(rng, jnp.bfloat16, *shape)
    kernel = jax.jit(lambda q, k, v: flash.flash_mha(q, k, v, **options))
    with sm90_env("1"):
        on = np.asarray(jax.block_until_ready(kernel(q, k, v)), np.float32)
    with sm90_env("0"):
        off = np.asarray(jax.block_until_ready(kernel(q, k, v)), np.float32)
    with sm90_env(None):
        unset = np.asarray(jax.block_until_ready(kernel(q, k, v)), np.float32)
    np.testing.assert_array_equal(unset, on)
    assert not np.array_equal(unset, off), "bit-identical to FlashAttention-2's output"


GRAD_CASES = [
    # (id, (batch, seqlen_q, seqlen_k, heads, heads_k, head_dim), options)
    ("full", (2, 300, 1000, 4, 4, 128), dict()),
    ("causal-gqa", (2, 1000, 1000, 8, 2, 128), dict(is_causal=True)),
    ("causal-empty-rows", (2, 1000, 300, 4, 4, 128), dict(is_causal=True)),
    ("window-empty-rows", (2, 300, 77, 4, 1, 128), dict(window_size=(0, 0))),
    ("window-hd64", (2, 777, 777, 4, 2, 64), dict(window_size=(100, 20))),
    ("full-hd64", (2, 300, 1000, 4, 4, 64), dict()),
    ("causal-gqa-hd64", (2, 1000, 1000, 8, 2, 64), dict(is_causal=True)),
    ("causal-empty-rows-hd64", (2, 1000, 300, 4, 1, 64), dict(is_causal=True)),
    ("causal-hd256", (1, 2048, 2048, 2, 2, 256), dict(is_causal=True)),
    ("full-gqa-hd256", (2, 300, 1000, 4, 2, 256), dict()),
    ("causal-empty-rows-hd256", (2, 1000, 300, 4, 1, 256), dict(is_causal=True)),
    ("window-hd256", (1, 777, 777, 4, 4, 256), dict(window_size=(100, 20))),
    # Unmasked calls whose last round of key blocks would leave SMs idle cut those blocks into
    # pieces of their queries (on a 132-SM H100: 12 blocks after a whole round, in halves; 24 in
    # quarters; 32 in halves). After more whole rounds the pieces are a launch of their own (416
    # blocks: 3 rounds, then 20 in halves; in quarters at d 256).
    ("cut-last-round", (1, 3000, 1100, 16, 4, 128), dict()),
    ("cut-quarters-hd64", (1, 4100, 700, 4, 2, 64), dict()),
    ("cut-halves-hd256", (1, 2100, 500, 4, 1, 256), dict()),
    ("cut-after-rounds", (1, 4096, 1024, 52, 4, 128), dict()),
    ("cut-after-rounds-hd256", (1, 4096, 512, 52, 4, 256), dict()),
    # Uncut and unmasked over several rounds at d 128 from 1024 queries: each CTA of the
    # persistent backward walks 9 or 10 of the 1280 key blocks (GQA, partial last key and query
    # blocks).
    ("persistent-rounds", (2, 1100, 2000, 40, 8, 128), dict()),
]


@requires_gpu
@pytest.mark.parametrize("through", [("out", "lse"), ("out",)], ids=["out+lse", "out"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("case", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_through_the_hopper_forward(flash, rng, case, dtype, through):
    """Gradients with the Hopper path on (our backward where it covers the case, else
    FlashAttention-2's, on the Hopper forward's out and lse): dq, dk, dv against the float32
    reference (test_gpu.check_features)."""
    _, shape, options = case
    need_sm90(flash, dtype, shape, **options)
    with sm90_env("1"), scratch_never_refused(flash):
        check_features(flash, rng, shape, through=through, dtype=dtype, **options)


CUT_STEPS = [
    # (id, shape, whether this many SMs cut the backward's last round of its key blocks, whether
    # the forward's is cut too)
    # 64 query tiles and 64 key blocks, fewer than the SMs: both directions cut.
    ("few-blocks", (1, 4096, 4096, 2, 2, 128), lambda sms: 86 <= sms <= 256, True),
    # 416 key blocks: whole rounds in one launch, the last round's pieces in another.
    ("after-whole-rounds", (1, 4096, 1024, 52, 4, 128), lambda sms: 416 // sms > 2 and 0 < 416 % sms <= sms // 2,
     False),
]


@requires_gpu
@pytest.mark.parametrize("case", CUT_STEPS, ids=[c[0] for c in CUT_STEPS])
def test_cut_last_rounds_run_through_jax(flash, rng, case):
    """A jitted fwd+bwd runs the backward's last round cut (and for few tiles the forward's),
    with XLA's scratch. Only the launch counts tell: uncut, the call is as correct, only slower."""
    name, shape, cuts, forward_cut = case
    need_sm90(flash, jnp.bfloat16, shape)
    if not uses(ext(flash), "bfloat16", shape[:5], 128, (9, 0), backward=True):
        pytest.skip(f"this build's Hopper backward has no bfloat16/128 ({flash.build_config()})")
    if not cuts(flash.num_sms()):
        pytest.skip(f"{name}: the last round runs uncut on {flash.num_sms()} SMs")
    q, k, v = random_qkv(rng, jnp.bfloat16, *shape)
    loss = lambda q, k, v: jnp.sum(flash.flash_mha(q, k, v).astype(jnp.float32) ** 2)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    before = flash.launch_counts()
    with sm90_env("1"):
        jax.block_until_ready(step(q, k, v))
    after = flash.launch_counts()
    delta = {key: after[key] - before[key] for key in after}
    assert delta["bwd_cut"] >= 1 and delta["uncut_for_scratch"] == 0, delta
    if forward_cut:
        assert delta["fwd_cut"] >= 1, delta
