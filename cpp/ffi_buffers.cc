// Checks the buffers an XLA FFI call hands a binding against the layout
// contract of flash_attn.h, and derives the attention shape from them.

#include <cstdio>
#include <string>
#include <vector>

#include "jax_flash_attn/flash_attn.h"

namespace {

constexpr int32_t kS32 = 4, kF16 = 10, kF32 = 11, kBF16 = 16;  // XLA_FFI_DataType codes

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

void expect_tensor(const char* name, const jfa_buffer& b, int32_t dtype,
                   const std::vector<int64_t>& dims) {
  expect_dtype(name, b, dtype);
  expect_dims(name, b, dims);
}

// q, k, v at b[0..2]: the shape they imply. Dense calls have rank 4
// [batch, seq, heads, head_dim]; varlen calls rank 3 [tokens, heads, head_dim],
// and the sequence fields are left to the caller.
void describe_qkv(const jfa_buffer* b, jfa_attention_shape* s, bool varlen = false) {
  const jfa_buffer &q = b[0], &k = b[1], &v = b[2];
  const int64_t rank = varlen ? 3 : 4;
  const char* layout = varlen ? "[tokens, heads, head_dim]" : "[batch, seq, heads, head_dim]";
  const std::string expected = "expected rank " + std::to_string(rank) + " " + layout + ", got shape ";
  if (q.rank != rank) throw Invalid{"q: " + expected + dims_str(q)};
  if (q.xla_dtype != kF16 && q.xla_dtype != kBF16) {
    throw Invalid{"q: dtype must be float16 or bfloat16, got dtype code " + std::to_string(q.xla_dtype)};
  }
  if (k.rank != rank) throw Invalid{"k: " + expected + dims_str(k)};
  expect_dtype("k", k, q.xla_dtype);
  expect_dtype("v", v, q.xla_dtype);
  expect_dims("v", v, std::vector<int64_t>(k.dims, k.dims + rank));
  const int64_t o = varlen ? 0 : 1;  // where the heads start, less one
  if (!varlen) {
    s->batch = q.dims[0];
    s->seqlen_q = q.dims[1];
    s->seqlen_k = k.dims[1];
  }
  s->num_heads = q.dims[1 + o];
  s->head_dim = q.dims[2 + o];
  s->num_heads_k = k.dims[1 + o];
  s->dtype = q.xla_dtype == kBF16 ? JFA_BFLOAT16 : JFA_FLOAT16;
  if (varlen) {
    expect_dims("k", k, {k.dims[0], s->num_heads_k, s->head_dim});
  } else {
    expect_dims("k", k, {s->batch, s->seqlen_k, s->num_heads_k, s->head_dim});
  }
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

// ALiBi slopes: float32 [batch, num_heads], or the empty float32 [0] that
// stands in for them when the call has none (zeros of the full shape would be
// an XLA kernel of their own in every call). The bindings refuse the empty
// one when has_alibi is set; no slope is read without it.
void expect_alibi(const jfa_buffer& b, const jfa_attention_shape* s) {
  if (b.rank == 1 && b.dims[0] == 0) {
    expect_dtype("alibi_slopes", b, kF32);
    return;
  }
  expect_tensor("alibi_slopes", b, kF32, {s->batch, s->num_heads});
}

// The backward's dout, out and softmax_lse: b[0], b[4] and b[5] in both
// layouts (q, k, v come between).
void expect_dout_out_lse(const jfa_buffer* b, int32_t dtype, const std::vector<int64_t>& q_dims,
                         const std::vector<int64_t>& lse_dims) {
  expect_tensor("dout", b[0], dtype, q_dims);
  expect_tensor("out", b[4], dtype, q_dims);
  expect_tensor("softmax_lse", b[5], kF32, lse_dims);
}

// dq, dk, dv at b[0..2]; dk and dv have the heads of q.
void expect_grads(const jfa_buffer* b, int32_t dtype, const std::vector<int64_t>& q_dims,
                  const std::vector<int64_t>& dkv_dims) {
  expect_tensor("dq", b[0], dtype, q_dims);
  expect_tensor("dk", b[1], dtype, dkv_dims);
  expect_tensor("dv", b[2], dtype, dkv_dims);
}

// The workspace sizes to check against: for one SM, a deterministic call's
// dq_accum is one split, which its buffer must be a whole multiple of (the
// split count follows the GPU's SM count); any other call's is the whole.
constexpr int kOneSm = 1;

// dq_accum and softmax_d at b[0..1]: dq_accum exactly `split` elements (when
// not deterministic) or a whole number of splits, and softmax_d.
void expect_workspace(const jfa_buffer* b, bool deterministic, int64_t split, int64_t softmax_d) {
  expect_dtype("dq_accum", b[0], kF32);
  if (!deterministic) {
    expect_dims("dq_accum", b[0], {split});
  } else if (b[0].rank != 1 || b[0].dims[0] <= 0 || b[0].dims[0] % split != 0) {
    throw Invalid{"dq_accum: the deterministic backward takes a whole number of splits of " +
                  std::to_string(split) + " elements, got shape " + dims_str(b[0])};
  }
  expect_tensor("softmax_d", b[1], kF32, {softmax_d});
}

// Varlen: cu_seqlens_q and cu_seqlens_k at b[0..1], int32 [batch + 1] each;
// sets the batch. The token counts come from q and k.
void expect_cu_seqlens(const jfa_buffer* b, jfa_attention_shape* s) {
  for (int i = 0; i < 2; ++i) {
    const char* name = i ? "cu_seqlens_k" : "cu_seqlens_q";
    expect_dtype(name, b[i], kS32);
    if (b[i].rank != 1 || b[i].dims[0] < 2) {
      throw Invalid{std::string(name) + ": expected shape (batch + 1,) with batch >= 1, got " + dims_str(b[i])};
    }
  }
  s->batch = b[0].dims[0] - 1;
  expect_dims("cu_seqlens_k", b[1], {s->batch + 1});
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
    expect_tensor("out", b[4], b[0].xla_dtype, {s->batch, s->seqlen_q, s->num_heads, s->head_dim});
    expect_tensor("softmax_lse", b[5], kF32, {s->batch, s->num_heads, s->seqlen_q});
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
    expect_dout_out_lse(b, dtype, q_dims, {s->batch, s->num_heads, s->seqlen_q});
    expect_alibi(b[6], s);
    expect_grads(b + 7, dtype, q_dims, dkv_dims);
    int64_t split = 0, softmax_d = 0;
    jfa_bwd_workspace_elems(s, kOneSm, &split, &softmax_d);
    expect_workspace(b + 10, s->deterministic, split, softmax_d);
  });
  return status != JFA_OK ? status : jfa_check_shape(s, err, err_len);
}

extern "C" int jfa_varlen_fwd_shape_from_buffers(const jfa_buffer* b, size_t n,
                                                 jfa_attention_shape* s, int64_t* total_q,
                                                 int64_t* total_k, char* err, size_t err_len) {
  const int status = report(err, err_len, [&] {
    if (n != 8) {
      throw Invalid{"varlen forward takes 8 buffers (q, k, v, cu_seqlens_q, cu_seqlens_k, "
                    "alibi_slopes, out, softmax_lse), got " + std::to_string(n)};
    }
    describe_qkv(b, s, /*varlen=*/true);
    expect_cu_seqlens(b + 3, s);
    *total_q = b[0].dims[0];
    *total_k = b[1].dims[0];
    expect_alibi(b[5], s);
    expect_tensor("out", b[6], b[0].xla_dtype, {*total_q, s->num_heads, s->head_dim});
    expect_tensor("softmax_lse", b[7], kF32, {s->num_heads, *total_q});
  });
  return status != JFA_OK ? status : jfa_check_shape(s, err, err_len);
}

extern "C" int jfa_varlen_bwd_shape_from_buffers(const jfa_buffer* b, size_t n,
                                                 jfa_attention_shape* s, int64_t* total_q,
                                                 int64_t* total_k, char* err, size_t err_len) {
  const int status = report(err, err_len, [&] {
    if (n != 14) {
      throw Invalid{"varlen backward takes 14 buffers (dout, q, k, v, out, softmax_lse, "
                    "cu_seqlens_q, cu_seqlens_k, alibi_slopes, dq, dk, dv, dq_accum, "
                    "softmax_d), got " + std::to_string(n)};
    }
    describe_qkv(b + 1, s, /*varlen=*/true);
    expect_cu_seqlens(b + 6, s);
    *total_q = b[1].dims[0];
    *total_k = b[2].dims[0];
    const int32_t dtype = b[1].xla_dtype;
    const std::vector<int64_t> q_dims{*total_q, s->num_heads, s->head_dim};
    const std::vector<int64_t> dkv_dims{*total_k, s->num_heads, s->head_dim};
    expect_dout_out_lse(b, dtype, q_dims, {s->num_heads, *total_q});
    expect_alibi(b[8], s);
    expect_grads(b + 9, dtype, q_dims, dkv_dims);
    int64_t split = 0, softmax_d = 0;
    jfa_varlen_bwd_workspace_elems(s, *total_q, kOneSm, &split, &softmax_d);
    expect_workspace(b + 12, s->deterministic, split, softmax_d);
  });
  return status != JFA_OK ? status : jfa_check_shape(s, err, err_len);
}

extern "C" int jfa_kvcache_fwd_shape_from_buffers(const jfa_buffer* b, size_t n, int paged,
                                                  jfa_attention_shape* s,
                                                  int64_t* max_blocks_per_seq,
                                                  int64_t* page_block_size, char* err,
                                                  size_t err_len) {
  const int status = report(err, err_len, [&] {
    if (n != 9) {
      throw Invalid{"KV-cache forward takes 9 buffers (q, k_cache, v_cache, seqlens_k, "
                    "block_table, alibi_slopes, out, softmax_lse, workspace), got " +
                    std::to_string(n)};
    }
    // A paged cache has pages where a contiguous one has batch entries: check
    // it as if it were a batch of pages, then restore the shape.
    jfa_buffer q = b[0];
    const int64_t pages = b[1].rank == 4 ? b[1].dims[0] : 0;
    std::vector<int64_t> q_dims(q.dims, q.dims + (q.rank > 0 ? q.rank : 0));
    if (paged && q.rank == 4) q_dims[0] = pages;
    q.dims = q_dims.data();
    const jfa_buffer qkv[] = {q, b[1], b[2]};
    describe_qkv(qkv, s);
    if (paged) {
      s->batch = b[0].dims[0];
      expect_tensor("block_table", b[4], kS32, {s->batch, b[4].rank == 2 ? b[4].dims[1] : -1});
      *max_blocks_per_seq = b[4].dims[1];
      *page_block_size = s->seqlen_k;
      if (*max_blocks_per_seq <= 0) {
        throw Invalid{"block_table: a paged cache needs at least one page per entry, got shape " +
                      dims_str(b[4])};
      }
      s->seqlen_k = *max_blocks_per_seq * *page_block_size;
    } else {
      expect_dtype("block_table", b[4], kS32);
      *max_blocks_per_seq = 0;
      *page_block_size = 0;
    }
    expect_tensor("seqlens_k", b[3], kS32, {s->batch});
    expect_alibi(b[5], s);
    expect_tensor("out", b[6], b[0].xla_dtype, {s->batch, s->seqlen_q, s->num_heads, s->head_dim});
    expect_tensor("softmax_lse", b[7], kF32, {s->batch, s->num_heads, s->seqlen_q});
    expect_dtype("workspace", b[8], kF32);
    if (b[8].rank != 1 || b[8].dims[0] < 1) {
      throw Invalid{"workspace: expected a float32 vector of at least 1 element, got shape " +
                    dims_str(b[8])};
    }
  });
  return status != JFA_OK ? status : jfa_check_shape(s, err, err_len);
}
