/* The C ABI of the jax-flash-attn kernel library (//cpp:flash_attn_kernels).
 *
 * Both bindings (the pybind11 one in cpp/ and the PyO3 one in rust/) call only
 * these functions, so the kernels are compiled once and both bindings stay
 * thin. Plain C: no C++ types cross this boundary, and no exception escapes.
 *
 * Layout contract: every tensor is dense, row-major, [batch, seq, heads, dim]
 * for q/k/v/out and their gradients; [batch, heads, seq_q] for the float32
 * log-sum-exp. Pointers are device pointers. All calls are asynchronous on
 * the given stream.
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

/* Bumped whenever a struct below changes layout; bindings check it. */
#define JFA_ABI_VERSION 1

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
} jfa_attention_shape;

typedef struct {
  jfa_attention_shape shape;
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* softmax_lse; /* [batch, num_heads, seqlen_q] */
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
  /* Scratch of jfa_bwd_workspace_elems() float32 elements each. */
  float* dq_accum;
  float* softmax_d;
} jfa_bwd_args;

/* One buffer as XLA's FFI describes it: its dtype code (XLA_FFI_DataType:
 * F16 = 10, F32 = 11, BF16 = 16), rank and dimensions. */
typedef struct {
  int32_t xla_dtype;
  int64_t rank;
  const int64_t* dims;
} jfa_buffer;

/* Validate the buffers of an XLA call and derive the shape from them, so that
 * both bindings check alike and give identical messages. The caller sets the
 * option fields of *shape (softmax_scale .. softcap); these fill the rest.
 *   forward:  q, k, v, out, softmax_lse                          (5 buffers)
 *   backward: dout, q, k, v, out, softmax_lse,
 *             dq, dk, dv, dq_accum, softmax_d                    (11 buffers) */
int jfa_fwd_shape_from_buffers(const jfa_buffer* buffers, size_t num_buffers,
                               jfa_attention_shape* shape, char* err, size_t err_len);
int jfa_bwd_shape_from_buffers(const jfa_buffer* buffers, size_t num_buffers,
                               jfa_attention_shape* shape, char* err, size_t err_len);

/* Element counts of the two float32 scratch buffers the backward pass needs. */
void jfa_bwd_workspace_elems(const jfa_attention_shape* shape, int64_t* dq_accum_elems,
                             int64_t* softmax_d_elems);

/* Checks shapes and options without touching the GPU. */
int jfa_check_shape(const jfa_attention_shape* shape, char* err, size_t err_len);

int jfa_mha_fwd(const jfa_fwd_args* args, void* cuda_stream, char* err, size_t err_len);
int jfa_mha_bwd(const jfa_bwd_args* args, void* cuda_stream, char* err, size_t err_len);

/* 1 when this build compiled a kernel for the dtype and head dim (rounded up
 * to the kernel's bucket: 32, 64, 96, 128, 192, 256), else 0. */
int jfa_has_kernel(jfa_dtype dtype, int64_t head_dim);

/* What this build compiled, e.g. "head_dims=128 dtypes=bf16 archs=sm_90". */
const char* jfa_build_config(void);

int jfa_abi_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* JAX_FLASH_ATTN_FLASH_ATTN_H_ */
