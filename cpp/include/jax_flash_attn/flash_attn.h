/* The C ABI of the jax-flash-attn kernel library (//cpp:flash_attn_kernels).
 *
 * Both bindings (the pybind11 one in cpp/ and the PyO3 one in rust/) call only
 * these functions, so the kernels are compiled once and both bindings stay
 * thin. Plain C: no C++ types cross this boundary, and no exception escapes.
 *
 * Layout contract: every tensor is dense, row-major, [batch, seq, heads, dim]
 * for q/k/v/out and their gradients; [batch, heads, seq_q] for the float32
 * log-sum-exp; float32 [batch, heads] (or [heads], batch stride 0) for ALiBi
 * slopes. Pointers are device pointers. All calls are asynchronous on the
 * given stream.
 *
 * Errors: functions return JFA_OK (0) or a nonzero status and, when `err` is
 * not NULL, write a NUL-terminated message of at most err_len bytes into it.
 */
#ifndef JAX_FLASH_ATTN_FLASH_ATTN_H_
#define JAX_FLASH_ATTN_FLASH_ATTN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct below changes layout or functions are added;
 * bindings check it. 5: jfa_has_sm90_kernel, jfa_fwd_uses_sm90, jfa_has_sm90_bwd_kernel,
 * jfa_bwd_uses_sm90, and a larger softmax_d from jfa_bwd_workspace_elems.
 * 6: jfa_fwd_args.workspace, jfa_fwd_workspace_bytes.
 * 7: jfa_bwd_args.workspace, jfa_bwd_workspace_bytes.
 * 8: jfa_launch_counts, jfa_get_launch_counts. */
#define JFA_ABI_VERSION 8

typedef enum {
  JFA_OK = 0,
  JFA_INVALID_ARGUMENT = 1,
  JFA_UNSUPPORTED = 2, /* a valid request this build has no kernel for */
  JFA_CUDA_ERROR = 3,
  JFA_INTERNAL = 4,
} jfa_status;

typedef enum {
  JFA_FLOAT16 = 0,
  JFA_BFLOAT16 = 1,
} jfa_dtype;

/* Shapes and options shared by the forward and backward pass. */
typedef struct {
  int64_t batch;
  int64_t seqlen_q;
  int64_t seqlen_k;
  int64_t num_heads;   /* heads of q */
  int64_t num_heads_k; /* heads of k and v; divides num_heads (GQA/MQA) */
  int64_t head_dim;    /* a multiple of 8, at most 256 */
  jfa_dtype dtype;
  float softmax_scale;
  int32_t is_causal;   /* bottom-right aligned when seqlen_q != seqlen_k */
  int32_t window_left; /* -1: unbounded */
  int32_t window_right;
  float softcap; /* 0: off */
  /* Backward only: accumulate dq in ceil(num_sms / (batch * num_heads))
   * separate float32 copies, summed in a fixed order afterwards, so that
   * repeated runs give bit-identical gradients (FlashAttention-2's
   * deterministic mode). The forward pass ignores it. */
  int32_t deterministic;
} jfa_attention_shape;

typedef struct {
  jfa_attention_shape shape;
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* softmax_lse; /* [batch, num_heads, seqlen_q]; +inf for rows that see no key */
  /* ALiBi, as FlashAttention-2 applies it: NULL for none, else one float32
   * slope per (batch, head) at alibi_slopes[b * alibi_slopes_batch_stride + h]
   * (stride 0: one slope per head for the whole batch). The score of query i
   * and key j gains slope * j with the causal mask (window (-1, 0)), else
   * -slope * |i + seqlen_k - seqlen_q - j|, after softmax_scale and softcap. */
  const float* alibi_slopes;
  int64_t alibi_slopes_batch_stride;
  /* Dense calls: optional scratch of jfa_fwd_workspace_bytes() bytes,
   * 16-byte aligned, uninitialised, alive until the call's kernels have run
   * (stream-ordered). NULL, fewer bytes or a smaller alignment only make the
   * call slower. Varlen and KV-cache calls ignore it. */
  void* workspace;
  int64_t workspace_bytes;
} jfa_fwd_args;

typedef struct {
  jfa_attention_shape shape;
  const void* q;
  const void* k;
  const void* v;
  const void* out;
  const float* softmax_lse;
  const void* dout;
  void* dq;
  /* dk and dv have num_heads heads (not num_heads_k): with GQA the caller
   * sums each group of num_heads / num_heads_k heads afterwards. */
  void* dk;
  void* dv;
  /* Scratch of jfa_bwd_workspace_elems() float32 elements each. The library
   * zeroes what it needs of dq_accum itself; the caller need not. */
  float* dq_accum;
  float* softmax_d;
  /* dq_accum's size in float32 elements. With shape.deterministic, it must
   * hold the splits this GPU needs (jfa_bwd_workspace_elems() with the GPU's
   * jfa_num_sms()); a smaller one is refused with JFA_INVALID_ARGUMENT. */
  int64_t dq_accum_elems;
  const float* alibi_slopes; /* as in jfa_fwd_args */
  int64_t alibi_slopes_batch_stride;
  /* Dense calls: optional scratch of jfa_bwd_workspace_bytes() bytes, as
   * jfa_fwd_args.workspace. */
  void* workspace;
  int64_t workspace_bytes;
} jfa_bwd_args;

/* Variable-length (packed) sequences, FlashAttention's varlen layout: the
 * batch's sequences concatenated along the token axis, without padding.
 *   q, out, dout, dq: [total_q, num_heads, head_dim]
 *   k, v:             [total_k, num_heads_k, head_dim]
 *   dk, dv:           [total_k, num_heads, head_dim] (summed for GQA by the caller)
 *   softmax_lse:      float32 [num_heads, total_q]
 * Sequence b holds queries cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1 and keys
 * cu_seqlens_k[b] .. cu_seqlens_k[b + 1] - 1: int32 [batch + 1] device arrays,
 * nondecreasing, from 0 to total_q (total_k). The kernels read them on the GPU
 * and trust them. shape.batch is the number of sequences, and shape.seqlen_q /
 * seqlen_k bound every sequence's length (max_seqlen_q / max_seqlen_k): rows of
 * a longer sequence are not computed. Causal masks, windows and ALiBi are
 * aligned per sequence as for dense calls; ALiBi slopes are per sequence
 * (alibi_slopes_batch_stride steps over sequences). */
typedef struct {
  jfa_fwd_args base;
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  int64_t total_q;
  int64_t total_k;
} jfa_varlen_fwd_args;

typedef struct {
  jfa_bwd_args base; /* dq_accum, softmax_d: jfa_varlen_bwd_workspace_elems() */
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  int64_t total_q;
  int64_t total_k;
} jfa_varlen_bwd_args;

/* Decoding against a KV cache (FlashAttention-2's split-KV kernels). base.k and
 * base.v are the caches, read only:
 *   contiguous (block_table NULL): [batch, seqlen_k, num_heads_k, head_dim],
 *     base.shape.seqlen_k being the cache's capacity;
 *   paged: [num_blocks, page_block_size, num_heads_k, head_dim], entry b's key
 *     t at page block_table[b * max_blocks_per_seq + t / page_block_size], row
 *     t % page_block_size; base.shape.seqlen_k = max_blocks_per_seq *
 *     page_block_size, and page_block_size a multiple of 256.
 * Entry b attends to its first seqlens_k[b] keys (int32 [batch] on the device,
 * at most the capacity; the kernels trust it); causal masks, windows and ALiBi
 * are aligned to that length as for dense calls. The caller appends new keys
 * itself before the call. With num_splits > 1 the keys are processed in that
 * many chunks in parallel and combined, in a float32 workspace of
 * jfa_kvcache_workspace_elems() elements. */
typedef struct {
  jfa_fwd_args base;
  const int32_t* seqlens_k;
  const int32_t* block_table; /* int32 [batch, max_blocks_per_seq], or NULL */
  int64_t max_blocks_per_seq;
  int64_t page_block_size;
  int32_t num_splits; /* 1 .. 128 */
  float* workspace;
  int64_t workspace_elems;
} jfa_kvcache_fwd_args;

/* One buffer as XLA's FFI describes it: its dtype code (XLA_FFI_DataType:
 * F16 = 10, F32 = 11, BF16 = 16), rank and dimensions. */
typedef struct {
  int32_t xla_dtype;
  int64_t rank;
  const int64_t* dims;
} jfa_buffer;

/* Validate the buffers of an XLA call and derive the shape from them, so that
 * both bindings check alike and give identical messages. The caller sets the
 * option fields of *shape (softmax_scale .. deterministic); these fill the rest.
 * alibi_slopes is always present: float32 [batch, num_heads], or when the call
 * has no ALiBi the empty float32 [0] (or any [batch, num_heads], ignored).
 *   forward:  q, k, v, alibi_slopes, out, softmax_lse            (6 buffers)
 *   backward: dout, q, k, v, out, softmax_lse, alibi_slopes,
 *             dq, dk, dv, dq_accum, softmax_d                    (12 buffers)
 * The backward's dq_accum is a float32 vector of one split, the size
 * jfa_bwd_workspace_elems() gives without shape->deterministic; with it, of a
 * positive whole number of splits (jfa_mha_bwd checks that there are enough
 * for the GPU it runs on). */
int jfa_fwd_shape_from_buffers(const jfa_buffer* buffers, size_t num_buffers,
                               jfa_attention_shape* shape, char* err, size_t err_len);
int jfa_bwd_shape_from_buffers(const jfa_buffer* buffers, size_t num_buffers,
                               jfa_attention_shape* shape, char* err, size_t err_len);

/* The same for varlen calls. The caller sets the option fields and
 * seqlen_q / seqlen_k (the bounds max_seqlen_q / max_seqlen_k) of *shape;
 * these fill the rest and the token counts.
 *   forward:  q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes,
 *             out, softmax_lse                                   (8 buffers)
 *   backward: dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k,
 *             alibi_slopes, dq, dk, dv, dq_accum, softmax_d      (14 buffers)
 * dq_accum is one split of jfa_varlen_bwd_workspace_elems() (or a whole
 * number of them with shape->deterministic), as for dense calls. */
int jfa_varlen_fwd_shape_from_buffers(const jfa_buffer* buffers, size_t num_buffers,
                                      jfa_attention_shape* shape, int64_t* total_q,
                                      int64_t* total_k, char* err, size_t err_len);
int jfa_varlen_bwd_shape_from_buffers(const jfa_buffer* buffers, size_t num_buffers,
                                      jfa_attention_shape* shape, int64_t* total_q,
                                      int64_t* total_k, char* err, size_t err_len);

/* The same for a KV-cache call. The caller sets the option fields of *shape;
 * *paged says whether block_table is read (the call's has_block_table).
 *   q, k_cache, v_cache, seqlens_k, block_table, alibi_slopes,
 *   out, softmax_lse, workspace                                  (9 buffers)
 * block_table is int32 [batch, max_blocks_per_seq] always (ignored unless
 * paged); workspace is a float32 vector of at least
 * jfa_kvcache_workspace_elems() for the call's num_splits. */
int jfa_kvcache_fwd_shape_from_buffers(const jfa_buffer* buffers, size_t num_buffers, int paged,
                                       jfa_attention_shape* shape, int64_t* max_blocks_per_seq,
                                       int64_t* page_block_size, char* err, size_t err_len);

/* How many chunks a KV-cache call splits the keys into: num_splits if
 * positive, else FlashAttention-2's occupancy heuristic for a GPU of num_sms
 * SMs (1 when batch * heads already fill it). Then the float32 workspace
 * elements that many splits need (at least 1). */
int32_t jfa_kvcache_num_splits(const jfa_attention_shape* shape, int num_splits, int num_sms);
int64_t jfa_kvcache_workspace_elems(const jfa_attention_shape* shape, int num_splits);

/* Element counts of the two float32 scratch buffers the backward pass needs
 * (either backward: FlashAttention-2's or the Hopper one).
 * num_sms is the SM count of the GPU the backward will run on (jfa_num_sms());
 * only the deterministic backward depends on it: its dq_accum holds
 * ceil(num_sms / (batch * num_heads)) splits of FlashAttention-2's (the one
 * backward it runs). Otherwise each buffer is the larger of the two
 * backwards' needs, as softmax_d always is: FlashAttention-2's dq_accum of
 * batch * heads * round128(seqlen_q) * head_dim rounded up to 32 (64 above
 * 128) and softmax_d of batch * heads * round128(seqlen_q); the Hopper one's
 * batch * heads * padded * head_dim and batch * heads * (2 * padded + 1),
 * padded the largest of round48(seqlen_q), round64(seqlen_q) and
 * round80(seqlen_q). */
void jfa_bwd_workspace_elems(const jfa_attention_shape* shape, int num_sms,
                             int64_t* dq_accum_elems, int64_t* softmax_d_elems);

/* The varlen backward's scratch, float32 vectors like the dense ones:
 * dq_accum holds (total_q + 128 * batch) rows of num_heads * head_dim rounded
 * up to a multiple of 32 (head_dim <= 128) or 64 floats per split (each
 * sequence padded by one 128-row tile), softmax_d num_heads * (total_q + 128 * batch). */
void jfa_varlen_bwd_workspace_elems(const jfa_attention_shape* shape, int64_t total_q,
                                    int num_sms, int64_t* dq_accum_elems,
                                    int64_t* softmax_d_elems);

/* The number of streaming multiprocessors of CUDA device `device`, or with
 * device -1 the largest over all visible devices. JFA_CUDA_ERROR (with the
 * CUDA runtime's message) when there is no usable GPU. */
int jfa_num_sms(int device, int* num_sms, char* err, size_t err_len);

/* Checks shapes and options without touching the GPU. */
int jfa_check_shape(const jfa_attention_shape* shape, char* err, size_t err_len);

int jfa_mha_fwd(const jfa_fwd_args* args, void* cuda_stream, char* err, size_t err_len);
int jfa_mha_bwd(const jfa_bwd_args* args, void* cuda_stream, char* err, size_t err_len);
int jfa_mha_varlen_fwd(const jfa_varlen_fwd_args* args, void* cuda_stream, char* err,
                       size_t err_len);
int jfa_mha_varlen_bwd(const jfa_varlen_bwd_args* args, void* cuda_stream, char* err,
                       size_t err_len);

int jfa_mha_kvcache_fwd(const jfa_kvcache_fwd_args* args, void* cuda_stream, char* err,
                        size_t err_len);

/* 1 when this build compiled the split-KV kernels jfa_mha_kvcache_fwd needs
 * for the dtype and head dim (--//cpp:splitkv), else 0. */
int jfa_has_kvcache_kernel(jfa_dtype dtype, int64_t head_dim);

/* 1 when this build compiled a kernel for the dtype and head dim (rounded up
 * to the kernel's bucket: 32, 64, 96, 128, 192, 256), else 0. */
int jfa_has_kernel(jfa_dtype dtype, int64_t head_dim);

/* Our Hopper kernels (cpp/sm90/, sm_90a code), linked into builds whose
 * --//cpp:cuda_archs names sm_90 unless --//cpp:sm90_kernels=false.
 *
 * jfa_has_sm90_kernel: 1 when it is linked and has a kernel for the dtype and
 * head dim (as jfa_mha_fwd receives it: a multiple of 8 in [8, 256]), else 0.
 *
 * jfa_fwd_uses_sm90: the rule jfa_mha_fwd dispatches by, as a pure function
 * (it reads neither the GPU nor the environment): 1 when a forward of this
 * shape and options, with ALiBi slopes (has_alibi) or not, packed (is_varlen:
 * jfa_mha_varlen_fwd) or dense, on a GPU of compute capability
 * cc_major.cc_minor, runs on the Hopper forward; 0 when it runs on
 * FlashAttention-2. It is 1 exactly when the call is dense, without ALiBi and
 * softcap, the compute capability is 9.0 (sm_90a code runs on no other GPU),
 * and the Hopper forward is linked and covers the dtype, head dim, window and
 * head counts. A shape jfa_check_shape rejects gives 0.
 *
 * jfa_mha_fwd applies it with the current device's compute capability unless
 * the environment variable JAX_FLASH_ATTN_SM90 is "0" (read at each call),
 * which keeps every call on FlashAttention-2. Both forwards write the same
 * out and softmax_lse (zeros and +inf for rows that see no key).
 *
 * jfa_has_sm90_bwd_kernel and jfa_bwd_uses_sm90: the same for jfa_mha_bwd,
 * whose rule is the forward's for the head dims the Hopper backward covers,
 * and never with shape->deterministic (it adds dQ with float32 reductions in
 * varying order). Either backward consumes either forward's out and
 * softmax_lse. KV-cache calls always run FlashAttention-2's kernels, and a
 * dtype and head dim without them is refused as before. */
int jfa_has_sm90_kernel(jfa_dtype dtype, int64_t head_dim);
int jfa_fwd_uses_sm90(const jfa_attention_shape* shape, int has_alibi, int is_varlen,
                      int cc_major, int cc_minor);
int jfa_has_sm90_bwd_kernel(jfa_dtype dtype, int64_t head_dim);
/* Scratch bytes a dense forward call can use on the current device: the
 * Hopper forward cuts its last round of tiles into pieces when SMs would
 * otherwise idle through it, and the pieces meet there. 0 when the call takes
 * no Hopper path, needs none or the shape is invalid. Bindings ask it at each
 * call and allocate from XLA's scratch allocator. */
int64_t jfa_fwd_workspace_bytes(const jfa_attention_shape* shape, int has_alibi);
int jfa_bwd_uses_sm90(const jfa_attention_shape* shape, int has_alibi, int is_varlen,
                      int cc_major, int cc_minor);
/* The same for a dense backward call: the Hopper backward cuts its last round
 * of key blocks into pieces of their queries, whose dK and dV meet there. */
int64_t jfa_bwd_workspace_bytes(const jfa_attention_shape* shape, int has_alibi);

/* What this build compiled, e.g. "kernels: bfloat16/128" (followed by
 * "; sm90 forward: bfloat16/128" and "; sm90 backward: bfloat16/128" for the
 * Hopper kernels' head dims among 32, 64, 96, 128, 192, 256). */
const char* jfa_build_config(void);

/* Process-wide counts of Hopper kernel launches since the library loaded:
 * those whose last round ran cut into pieces (forward, backward), and those
 * that would have cut it but were given less scratch than
 * jfa_*_workspace_bytes() asked for and ran uncut (correct, slower). A
 * binding whose scratch never arrives shows in the last: for tests and
 * diagnostics, since nothing else tells the two apart. */
typedef struct {
  uint64_t fwd_cut;
  uint64_t bwd_cut;
  uint64_t uncut_for_scratch;
} jfa_launch_counts;
void jfa_get_launch_counts(jfa_launch_counts* counts);

int jfa_abi_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* JAX_FLASH_ATTN_FLASH_ATTN_H_ */
