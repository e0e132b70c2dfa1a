// Checks the buffers an XLA FFI call hands a binding against the layout
// contract of flash_attn.h, and derives the attention shape from them.

#include <cstdio>
#include <string>
#include <vector>

#include "jax_flash_attn/flash_attn.h"

namespace {

constexpr int32_t kF16 = 10, kF32 = 11, kBF16 = 16;  // XLA_FFI_DataType codes

struct Invalid {
  std::string message;
};

std::string dims_str(const jfa_buffer& b) {
  std::string s = "(";
  for (int64_t i = 0; i < b.rank; ++i) s += (i ? ", " : "") + std::to_string(b.dims[i]);
  return s + (b.rank == 1 ? ",)" : ")");
}

std::string dims_str(const std::vector<int64_t>& dims) {
  jfa_buffer b{0, static_cast<int64_t>(dims.size()), dims.data()};
  return dims_str(b);
}

void expect_dims(const char* name, const jfa_buffer& b, const std::vector<int64_t>& dims) {
  bool ok = b.rank == static_cast<int64_t>(dims.size());
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = b.dims[i] == dims[i];
  if (!ok) throw Invalid{std::string(name) + ": expected shape " + dims_str(dims) + ", got " + dims_str(b)};
}

void expect_dtype(const char* name, const jfa_buffer& b, int32_t dtype) {
  if (b.xla_dtype != dtype) {
    throw Invalid{std::string(name) + ": expected dtype code " + std::to_string(dtype) +
                  ", got " + std::to_string(b.xla_dtype)};
  }
}

// q, k, v at b[0..2]: the shape they imply.
void describe_qkv(const jfa_buffer* b, jfa_attention_shape* s) {
  const jfa_buffer &q = b[0], &k = b[1], &v = b[2];
  if (q.rank != 4) throw Invalid{"q: expected rank 4 [batch, seq, heads, head_dim], got shape " + dims_str(q)};
  if (q.xla_dtype != kF16 && q.xla_dtype != kBF16) {
    throw Invalid{"q: dtype must be float16 or bfloat16, got dtype code " + std::to_string(q.xla_dtype)};
  }
  if (k.rank != 4) throw Invalid{"k: expected rank 4 [batch, seq, heads, head_dim], got shape " + dims_str(k)};
  expect_dtype("k", k, q.xla_dtype);
  expect_dtype("v", v, q.xla_dtype);
  expect_dims("v", v, {k.dims[0], k.dims[1], k.dims[2], k.dims[3]});
  s->batch = q.dims[0];
  s->seqlen_q = q.dims[1];
  s->num_heads = q.dims[2];
  s->head_dim = q.dims[3];
  s->seqlen_k = k.dims[1];
  s->num_heads_k = k.dims[2];
  s->dtype = q.xla_dtype == kBF16 ? JFA_BFLOAT16 : JFA_FLOAT16;
  expect_dims("k", k, {s->batch, s->seqlen_k, s->num_heads_k, s->head_dim});
}

template <typename F>
int report(char* err, size_t err_len, F&& body) {
  try {
    body();
    return JFA_OK;
  } catch (const Invalid& e) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", e.message.c_str());
    return JFA_INVALID_ARGUMENT;
  }
}

// ALiBi slopes: float32 [batch, num_heads], also when the call has none.
void expect_alibi(const jfa_buffer& b, const jfa_attention_shape* s) {
  expect_dtype("alibi_slopes", b, kF32);
  expect_dims("alibi_slopes", b, {s->batch, s->num_heads});
}

}  // namespace

extern "C" int jfa_fwd_shape_from_buffers(const jfa_buffer* b, size_t n, jfa_attention_shape* s,
                                          char* err, size_t err_len) {
  const int status = report(err, err_len, [&] {
    if (n != 6) {
      throw Invalid{"forward takes 6 buffers (q, k, v, alibi_slopes, out, softmax_lse), got " +
                    std::to_string(n)};
    }
    describe_qkv(b, s);
    expect_alibi(b[3], s);
    expect_dtype("out", b[4], b[0].xla_dtype);
    expect_dims("out", b[4], {s->batch, s->seqlen_q, s->num_heads, s->head_dim});
    expect_dtype("softmax_lse", b[5], kF32);
    expect_dims("softmax_lse", b[5], {s->batch, s->num_heads, s->seqlen_q});
  });
  return status != JFA_OK ? status : jfa_check_shape(s, err, err_len);
}

extern "C" int jfa_bwd_shape_from_buffers(const jfa_buffer* b, size_t n, jfa_attention_shape* s,
                                          char* err, size_t err_len) {
  const int status = report(err, err_len, [&] {
    if (n != 12) {
      throw Invalid{"backward takes 12 buffers (dout, q, k, v, out, softmax_lse, alibi_slopes, "
                    "dq, dk, dv, dq_accum, softmax_d), got " + std::to_string(n)};
    }
    describe_qkv(b + 1, s);
    const int32_t dtype = b[1].xla_dtype;
    const std::vector<int64_t> q_dims{s->batch, s->seqlen_q, s->num_heads, s->head_dim};
    const std::vector<int64_t> dkv_dims{s->batch, s->seqlen_k, s->num_heads, s->head_dim};
    expect_dtype("dout", b[0], dtype);
    expect_dims("dout", b[0], q_dims);
    expect_dtype("out", b[4], dtype);
    expect_dims("out", b[4], q_dims);
    expect_dtype("softmax_lse", b[5], kF32);
    expect_dims("softmax_lse", b[5], {s->batch, s->num_heads, s->seqlen_q});
    expect_alibi(b[6], s);
    expect_dtype("dq", b[7], dtype);
    expect_dims("dq", b[7], q_dims);
    expect_dtype("dk", b[8], dtype);
    expect_dims("dk", b[8], dkv_dims);
    expect_dtype("dv", b[9], dtype);
    expect_dims("dv", b[9], dkv_dims);
    // One split of dq_accum: the whole of it when not deterministic.
    jfa_attention_shape one = *s;
    one.deterministic = 0;
    int64_t split = 0, softmax_d = 0;
    jfa_bwd_workspace_elems(&one, 0, &split, &softmax_d);
    expect_dtype("dq_accum", b[10], kF32);
    if (!s->deterministic) {
      expect_dims("dq_accum", b[10], {split});
    } else if (b[10].rank != 1 || b[10].dims[0] <= 0 || b[10].dims[0] % split != 0) {
      throw Invalid{"dq_accum: the deterministic backward takes a whole number of splits of " +
                    std::to_string(split) + " elements, got shape " + dims_str(b[10])};
    }
    expect_dtype("softmax_d", b[11], kF32);
    expect_dims("softmax_d", b[11], {softmax_d});
  });
  return status != JFA_OK ? status : jfa_check_shape(s, err, err_len);
}
