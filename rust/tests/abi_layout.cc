// Sizes, field offsets and constants of the two C headers the Rust binding
// mirrors by hand (flash_attn.h in src/kernels.rs, XLA's c_api.h in
// src/xla_ffi.rs), for the layout test src/tests/abi_layout.rs; and, checked
// when this file compiles, the C ABI's function types as kernels.rs declares
// them.

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "jax_flash_attn/flash_attn.h"
#include "xla/ffi/api/c_api.h"

extern "C" {
struct jfa_rust_layout_entry {
  const char* name;
  int64_t value;
};
extern const jfa_rust_layout_entry jfa_rust_layout[];
}

#define SIZE(T) {"sizeof " #T, static_cast<int64_t>(sizeof(T))}
#define FIELD(T, f) {#T "." #f, static_cast<int64_t>(offsetof(T, f))}
#define VALUE(x) {#x, static_cast<int64_t>(x)}

const jfa_rust_layout_entry jfa_rust_layout[] = {
    // flash_attn.h
    VALUE(JFA_ABI_VERSION), VALUE(JFA_OK), VALUE(JFA_INVALID_ARGUMENT), VALUE(JFA_UNSUPPORTED),
    VALUE(JFA_CUDA_ERROR),
    VALUE(JFA_FLOAT16), VALUE(JFA_BFLOAT16), SIZE(jfa_dtype),
    SIZE(jfa_attention_shape), FIELD(jfa_attention_shape, num_heads_k),
    FIELD(jfa_attention_shape, head_dim), FIELD(jfa_attention_shape, dtype),
    FIELD(jfa_attention_shape, softmax_scale), FIELD(jfa_attention_shape, is_causal),
    FIELD(jfa_attention_shape, window_left), FIELD(jfa_attention_shape, window_right),
    FIELD(jfa_attention_shape, softcap), FIELD(jfa_attention_shape, deterministic),
    SIZE(jfa_fwd_args), FIELD(jfa_fwd_args, q), FIELD(jfa_fwd_args, k), FIELD(jfa_fwd_args, v),
    FIELD(jfa_fwd_args, out), FIELD(jfa_fwd_args, softmax_lse), FIELD(jfa_fwd_args, alibi_slopes),
    FIELD(jfa_fwd_args, alibi_slopes_batch_stride), FIELD(jfa_fwd_args, workspace),
    FIELD(jfa_fwd_args, workspace_bytes),
    SIZE(jfa_bwd_args), FIELD(jfa_bwd_args, q), FIELD(jfa_bwd_args, k), FIELD(jfa_bwd_args, v),
    FIELD(jfa_bwd_args, out), FIELD(jfa_bwd_args, softmax_lse), FIELD(jfa_bwd_args, dout),
    FIELD(jfa_bwd_args, dq), FIELD(jfa_bwd_args, dk), FIELD(jfa_bwd_args, dv),
    FIELD(jfa_bwd_args, dq_accum), FIELD(jfa_bwd_args, softmax_d),
    FIELD(jfa_bwd_args, dq_accum_elems), FIELD(jfa_bwd_args, alibi_slopes),
    FIELD(jfa_bwd_args, alibi_slopes_batch_stride), FIELD(jfa_bwd_args, workspace),
    FIELD(jfa_bwd_args, workspace_bytes),
    SIZE(jfa_varlen_fwd_args), FIELD(jfa_varlen_fwd_args, base),
    FIELD(jfa_varlen_fwd_args, cu_seqlens_q), FIELD(jfa_varlen_fwd_args, cu_seqlens_k),
    FIELD(jfa_varlen_fwd_args, total_q), FIELD(jfa_varlen_fwd_args, total_k),
    SIZE(jfa_varlen_bwd_args), FIELD(jfa_varlen_bwd_args, base),
    FIELD(jfa_varlen_bwd_args, cu_seqlens_q), FIELD(jfa_varlen_bwd_args, cu_seqlens_k),
    FIELD(jfa_varlen_bwd_args, total_q), FIELD(jfa_varlen_bwd_args, total_k),
    SIZE(jfa_kvcache_fwd_args), FIELD(jfa_kvcache_fwd_args, base),
    FIELD(jfa_kvcache_fwd_args, seqlens_k), FIELD(jfa_kvcache_fwd_args, block_table),
    FIELD(jfa_kvcache_fwd_args, max_blocks_per_seq), FIELD(jfa_kvcache_fwd_args, page_block_size),
    FIELD(jfa_kvcache_fwd_args, num_splits), FIELD(jfa_kvcache_fwd_args, workspace),
    FIELD(jfa_kvcache_fwd_args, workspace_elems),
    SIZE(jfa_buffer), FIELD(jfa_buffer, rank), FIELD(jfa_buffer, dims),
    SIZE(jfa_launch_counts), FIELD(jfa_launch_counts, bwd_cut),
    FIELD(jfa_launch_counts, uncut_for_scratch),
    // c_api.h
    VALUE(XLA_FFI_API_MAJOR), VALUE(XLA_FFI_API_MINOR),
    VALUE(XLA_FFI_Error_Code_INVALID_ARGUMENT), VALUE(XLA_FFI_Error_Code_UNIMPLEMENTED),
    VALUE(XLA_FFI_Error_Code_INTERNAL),
    VALUE(XLA_FFI_DataType_PRED), VALUE(XLA_FFI_DataType_S32), VALUE(XLA_FFI_DataType_F16),
    VALUE(XLA_FFI_DataType_F32), VALUE(XLA_FFI_DataType_BF16),
    VALUE(XLA_FFI_ExecutionStage_EXECUTE), VALUE(XLA_FFI_ArgType_BUFFER),
    VALUE(XLA_FFI_RetType_BUFFER), VALUE(XLA_FFI_AttrType_SCALAR),
    VALUE(XLA_FFI_Extension_Metadata),
    SIZE(XLA_FFI_DataType), SIZE(XLA_FFI_ExecutionStage), SIZE(XLA_FFI_Error_Code),
    VALUE(XLA_FFI_Extension_Base_STRUCT_SIZE), FIELD(XLA_FFI_Extension_Base, type),
    FIELD(XLA_FFI_Extension_Base, next),
    VALUE(XLA_FFI_Api_Version_STRUCT_SIZE), FIELD(XLA_FFI_Api_Version, major_version),
    FIELD(XLA_FFI_Api_Version, minor_version),
    VALUE(XLA_FFI_Error_Create_Args_STRUCT_SIZE), FIELD(XLA_FFI_Error_Create_Args, message),
    FIELD(XLA_FFI_Error_Create_Args, errc),
    VALUE(XLA_FFI_Error_GetMessage_Args_STRUCT_SIZE), FIELD(XLA_FFI_Error_GetMessage_Args, error),
    FIELD(XLA_FFI_Error_GetMessage_Args, message),
    VALUE(XLA_FFI_Error_Destroy_Args_STRUCT_SIZE), FIELD(XLA_FFI_Error_Destroy_Args, error),
    VALUE(XLA_FFI_Buffer_STRUCT_SIZE), FIELD(XLA_FFI_Buffer, dtype), FIELD(XLA_FFI_Buffer, data),
    FIELD(XLA_FFI_Buffer, rank), FIELD(XLA_FFI_Buffer, dims),
    SIZE(XLA_FFI_ByteSpan), FIELD(XLA_FFI_ByteSpan, len),
    SIZE(XLA_FFI_Scalar), FIELD(XLA_FFI_Scalar, value),
    VALUE(XLA_FFI_Args_STRUCT_SIZE), FIELD(XLA_FFI_Args, size), FIELD(XLA_FFI_Args, types),
    FIELD(XLA_FFI_Args, args),
    VALUE(XLA_FFI_Rets_STRUCT_SIZE), FIELD(XLA_FFI_Rets, size), FIELD(XLA_FFI_Rets, types),
    FIELD(XLA_FFI_Rets, rets),
    VALUE(XLA_FFI_Attrs_STRUCT_SIZE), FIELD(XLA_FFI_Attrs, size), FIELD(XLA_FFI_Attrs, types),
    FIELD(XLA_FFI_Attrs, names), FIELD(XLA_FFI_Attrs, attrs),
    VALUE(XLA_FFI_CallFrame_STRUCT_SIZE), SIZE(XLA_FFI_CallFrame), FIELD(XLA_FFI_CallFrame, api),
    FIELD(XLA_FFI_CallFrame, ctx), FIELD(XLA_FFI_CallFrame, stage), FIELD(XLA_FFI_CallFrame, args),
    FIELD(XLA_FFI_CallFrame, rets), FIELD(XLA_FFI_CallFrame, attrs),
    FIELD(XLA_FFI_CallFrame, future),
    VALUE(XLA_FFI_Stream_Get_Args_STRUCT_SIZE), FIELD(XLA_FFI_Stream_Get_Args, ctx),
    FIELD(XLA_FFI_Stream_Get_Args, stream),
    VALUE(XLA_FFI_DeviceMemory_Allocate_Args_STRUCT_SIZE),
    FIELD(XLA_FFI_DeviceMemory_Allocate_Args, ctx), FIELD(XLA_FFI_DeviceMemory_Allocate_Args, size),
    FIELD(XLA_FFI_DeviceMemory_Allocate_Args, alignment),
    FIELD(XLA_FFI_DeviceMemory_Allocate_Args, data),
    VALUE(XLA_FFI_DeviceMemory_Free_Args_STRUCT_SIZE), FIELD(XLA_FFI_DeviceMemory_Free_Args, ctx),
    FIELD(XLA_FFI_DeviceMemory_Free_Args, size), FIELD(XLA_FFI_DeviceMemory_Free_Args, data),
    VALUE(XLA_FFI_Metadata_STRUCT_SIZE), SIZE(XLA_FFI_Metadata),
    FIELD(XLA_FFI_Metadata, api_version), FIELD(XLA_FFI_Metadata, traits),
    FIELD(XLA_FFI_Metadata, state_type_id),
    VALUE(XLA_FFI_Metadata_Extension_STRUCT_SIZE), FIELD(XLA_FFI_Metadata_Extension, metadata),
    FIELD(XLA_FFI_Api, api_version), FIELD(XLA_FFI_Api, internal_api),
    FIELD(XLA_FFI_Api, XLA_FFI_Error_Create), FIELD(XLA_FFI_Api, XLA_FFI_Error_GetMessage),
    FIELD(XLA_FFI_Api, XLA_FFI_Error_Destroy), FIELD(XLA_FFI_Api, XLA_FFI_Handler_Register),
    FIELD(XLA_FFI_Api, XLA_FFI_Stream_Get), FIELD(XLA_FFI_Api, XLA_FFI_DeviceMemory_Allocate),
    FIELD(XLA_FFI_Api, XLA_FFI_DeviceMemory_Free),
    {nullptr, 0},
};

// src/kernels.rs declares jfa_dtype parameters and fields as C int.
static_assert(sizeof(jfa_dtype) == sizeof(int), "jfa_dtype is not int-sized");

// The extern "C" block of src/kernels.rs, written in C types.
template <typename Declared, typename Mirrored>
constexpr bool same = std::is_same_v<Declared, Mirrored>;
static_assert(same<decltype(jfa_fwd_shape_from_buffers),
                   int(const jfa_buffer*, size_t, jfa_attention_shape*, char*, size_t)>);
static_assert(same<decltype(jfa_bwd_shape_from_buffers),
                   int(const jfa_buffer*, size_t, jfa_attention_shape*, char*, size_t)>);
static_assert(same<decltype(jfa_varlen_fwd_shape_from_buffers),
                   int(const jfa_buffer*, size_t, jfa_attention_shape*, int64_t*, int64_t*,
                       char*, size_t)>);
static_assert(same<decltype(jfa_varlen_bwd_shape_from_buffers),
                   int(const jfa_buffer*, size_t, jfa_attention_shape*, int64_t*, int64_t*,
                       char*, size_t)>);
static_assert(same<decltype(jfa_kvcache_fwd_shape_from_buffers),
                   int(const jfa_buffer*, size_t, int, jfa_attention_shape*, int64_t*, int64_t*,
                       char*, size_t)>);
static_assert(
    same<decltype(jfa_kvcache_num_splits), int32_t(const jfa_attention_shape*, int, int)>);
static_assert(
    same<decltype(jfa_kvcache_workspace_elems), int64_t(const jfa_attention_shape*, int)>);
static_assert(same<decltype(jfa_bwd_workspace_elems),
                   void(const jfa_attention_shape*, int, int64_t*, int64_t*)>);
static_assert(same<decltype(jfa_varlen_bwd_workspace_elems),
                   void(const jfa_attention_shape*, int64_t, int, int64_t*, int64_t*)>);
static_assert(same<decltype(jfa_num_sms), int(int, int*, char*, size_t)>);
static_assert(same<decltype(jfa_check_shape), int(const jfa_attention_shape*, char*, size_t)>);
static_assert(same<decltype(jfa_mha_fwd), int(const jfa_fwd_args*, void*, char*, size_t)>);
static_assert(same<decltype(jfa_fwd_workspace_bytes), int64_t(const jfa_attention_shape*, int)>);
static_assert(same<decltype(jfa_bwd_workspace_bytes), int64_t(const jfa_attention_shape*, int)>);
static_assert(same<decltype(jfa_mha_bwd), int(const jfa_bwd_args*, void*, char*, size_t)>);
static_assert(
    same<decltype(jfa_mha_varlen_fwd), int(const jfa_varlen_fwd_args*, void*, char*, size_t)>);
static_assert(
    same<decltype(jfa_mha_varlen_bwd), int(const jfa_varlen_bwd_args*, void*, char*, size_t)>);
static_assert(
    same<decltype(jfa_mha_kvcache_fwd), int(const jfa_kvcache_fwd_args*, void*, char*, size_t)>);
static_assert(same<decltype(jfa_has_kvcache_kernel), int(jfa_dtype, int64_t)>);
static_assert(same<decltype(jfa_has_kernel), int(jfa_dtype, int64_t)>);
static_assert(same<decltype(jfa_has_sm90_kernel), int(jfa_dtype, int64_t)>);
static_assert(
    same<decltype(jfa_fwd_uses_sm90), int(const jfa_attention_shape*, int, int, int, int)>);
static_assert(same<decltype(jfa_has_sm90_bwd_kernel), int(jfa_dtype, int64_t)>);
static_assert(
    same<decltype(jfa_bwd_uses_sm90), int(const jfa_attention_shape*, int, int, int, int)>);
static_assert(same<decltype(jfa_build_config), const char*()>);
static_assert(same<decltype(jfa_abi_version), int()>);
static_assert(same<decltype(jfa_get_launch_counts), void(jfa_launch_counts*)>);
// And the handler type of src/xla_ffi.rs.
static_assert(same<XLA_FFI_Handler, XLA_FFI_Error*(XLA_FFI_CallFrame*)>);
