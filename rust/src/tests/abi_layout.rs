//! The hand-written mirrors of flash_attn.h (kernels.rs) and XLA's c_api.h
//! (xla_ffi.rs) against the headers themselves: every size, offset and
//! constant tests/abi_layout.cc takes from the headers must equal ours.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr};
use std::mem::{offset_of, size_of};

use crate::kernels::{self as k, AttentionShape, BwdArgs, FwdArgs, JfaBuffer};
use crate::kernels::{KvcacheFwdArgs, LaunchCounts, VarlenBwdArgs, VarlenFwdArgs};
use crate::xla_ffi::{self as x, *};

#[repr(C)]
struct Entry {
    name: *const c_char,
    value: i64,
}

extern "C" {
    static jfa_rust_layout: [Entry; 0];
}

/// The header's values, by name.
fn from_headers() -> BTreeMap<String, i64> {
    let mut values = BTreeMap::new();
    let mut entry = unsafe { jfa_rust_layout.as_ptr() };
    unsafe {
        while !(*entry).name.is_null() {
            let name = CStr::from_ptr((*entry).name).to_str().unwrap().to_owned();
            values.insert(name, (*entry).value);
            entry = entry.add(1);
        }
    }
    values
}

macro_rules! size {
    ($c:literal, $t:ty) => {
        (concat!("sizeof ", $c), size_of::<$t>() as i64)
    };
}
macro_rules! field {
    ($c:literal, $t:ty, $f:ident) => {
        ($c, offset_of!($t, $f) as i64)
    };
}

fn ours() -> Vec<(&'static str, i64)> {
    vec![
        ("JFA_ABI_VERSION", k::JFA_ABI_VERSION as i64),
        ("JFA_OK", k::JFA_OK as i64),
        ("JFA_INVALID_ARGUMENT", k::JFA_INVALID_ARGUMENT as i64),
        ("JFA_UNSUPPORTED", k::JFA_UNSUPPORTED as i64),
        ("JFA_CUDA_ERROR", k::JFA_CUDA_ERROR as i64),
        ("JFA_FLOAT16", k::JFA_FLOAT16 as i64),
        ("JFA_BFLOAT16", k::JFA_BFLOAT16 as i64),
        size!("jfa_dtype", c_int),
        size!("jfa_attention_shape", AttentionShape),
        field!("jfa_attention_shape.num_heads_k", AttentionShape, num_heads_k),
        field!("jfa_attention_shape.head_dim", AttentionShape, head_dim),
        field!("jfa_attention_shape.dtype", AttentionShape, dtype),
        field!("jfa_attention_shape.softmax_scale", AttentionShape, softmax_scale),
        field!("jfa_attention_shape.is_causal", AttentionShape, is_causal),
        field!("jfa_attention_shape.window_left", AttentionShape, window_left),
        field!("jfa_attention_shape.window_right", AttentionShape, window_right),
        field!("jfa_attention_shape.softcap", AttentionShape, softcap),
        field!("jfa_attention_shape.deterministic", AttentionShape, deterministic),
        size!("jfa_fwd_args", FwdArgs),
        field!("jfa_fwd_args.q", FwdArgs, q),
        field!("jfa_fwd_args.k", FwdArgs, k),
        field!("jfa_fwd_args.v", FwdArgs, v),
        field!("jfa_fwd_args.out", FwdArgs, out),
        field!("jfa_fwd_args.softmax_lse", FwdArgs, softmax_lse),
        field!("jfa_fwd_args.alibi_slopes", FwdArgs, alibi_slopes),
        field!("jfa_fwd_args.alibi_slopes_batch_stride", FwdArgs, alibi_slopes_batch_stride),
        field!("jfa_fwd_args.workspace", FwdArgs, workspace),
        field!("jfa_fwd_args.workspace_bytes", FwdArgs, workspace_bytes),
        size!("jfa_bwd_args", BwdArgs),
        field!("jfa_bwd_args.q", BwdArgs, q),
        field!("jfa_bwd_args.k", BwdArgs, k),
        field!("jfa_bwd_args.v", BwdArgs, v),
        field!("jfa_bwd_args.out", BwdArgs, out),
        field!("jfa_bwd_args.softmax_lse", BwdArgs, softmax_lse),
        field!("jfa_bwd_args.dout", BwdArgs, dout),
        field!("jfa_bwd_args.dq", BwdArgs, dq),
        field!("jfa_bwd_args.dk", BwdArgs, dk),
        field!("jfa_bwd_args.dv", BwdArgs, dv),
        field!("jfa_bwd_args.dq_accum", BwdArgs, dq_accum),
        field!("jfa_bwd_args.softmax_d", BwdArgs, softmax_d),
        field!("jfa_bwd_args.dq_accum_elems", BwdArgs, dq_accum_elems),
        field!("jfa_bwd_args.alibi_slopes", BwdArgs, alibi_slopes),
        field!("jfa_bwd_args.alibi_slopes_batch_stride", BwdArgs, alibi_slopes_batch_stride),
        field!("jfa_bwd_args.workspace", BwdArgs, workspace),
        field!("jfa_bwd_args.workspace_bytes", BwdArgs, workspace_bytes),
        size!("jfa_varlen_fwd_args", VarlenFwdArgs),
        field!("jfa_varlen_fwd_args.base", VarlenFwdArgs, base),
        field!("jfa_varlen_fwd_args.cu_seqlens_q", VarlenFwdArgs, cu_seqlens_q),
        field!("jfa_varlen_fwd_args.cu_seqlens_k", VarlenFwdArgs, cu_seqlens_k),
        field!("jfa_varlen_fwd_args.total_q", VarlenFwdArgs, total_q),
        field!("jfa_varlen_fwd_args.total_k", VarlenFwdArgs, total_k),
        size!("jfa_varlen_bwd_args", VarlenBwdArgs),
        field!("jfa_varlen_bwd_args.base", VarlenBwdArgs, base),
        field!("jfa_varlen_bwd_args.cu_seqlens_q", VarlenBwdArgs, cu_seqlens_q),
        field!("jfa_varlen_bwd_args.cu_seqlens_k", VarlenBwdArgs, cu_seqlens_k),
        field!("jfa_varlen_bwd_args.total_q", VarlenBwdArgs, total_q),
        field!("jfa_varlen_bwd_args.total_k", VarlenBwdArgs, total_k),
        size!("jfa_kvcache_fwd_args", KvcacheFwdArgs),
        field!("jfa_kvcache_fwd_args.base", KvcacheFwdArgs, base),
        field!("jfa_kvcache_fwd_args.seqlens_k", KvcacheFwdArgs, seqlens_k),
        field!("jfa_kvcache_fwd_args.block_table", KvcacheFwdArgs, block_table),
        field!("jfa_kvcache_fwd_args.max_blocks_per_seq", KvcacheFwdArgs, max_blocks_per_seq),
        field!("jfa_kvcache_fwd_args.page_block_size", KvcacheFwdArgs, page_block_size),
        field!("jfa_kvcache_fwd_args.num_splits", KvcacheFwdArgs, num_splits),
        field!("jfa_kvcache_fwd_args.workspace", KvcacheFwdArgs, workspace),
        field!("jfa_kvcache_fwd_args.workspace_elems", KvcacheFwdArgs, workspace_elems),
        size!("jfa_buffer", JfaBuffer),
        field!("jfa_buffer.rank", JfaBuffer, rank),
        field!("jfa_buffer.dims", JfaBuffer, dims),
        size!("jfa_launch_counts", LaunchCounts),
        field!("jfa_launch_counts.bwd_cut", LaunchCounts, bwd_cut),
        field!("jfa_launch_counts.uncut_for_scratch", LaunchCounts, uncut_for_scratch),
        ("XLA_FFI_API_MAJOR", x::API_MAJOR as i64),
        ("XLA_FFI_API_MINOR", x::API_MINOR as i64),
        ("XLA_FFI_Error_Code_INVALID_ARGUMENT", x::ERROR_INVALID_ARGUMENT as i64),
        ("XLA_FFI_Error_Code_UNIMPLEMENTED", x::ERROR_UNIMPLEMENTED as i64),
        ("XLA_FFI_Error_Code_INTERNAL", x::ERROR_INTERNAL as i64),
        ("XLA_FFI_DataType_PRED", x::PRED as i64),
        ("XLA_FFI_DataType_S32", x::S32 as i64),
        ("XLA_FFI_DataType_F16", x::F16 as i64),
        ("XLA_FFI_DataType_F32", x::F32 as i64),
        ("XLA_FFI_DataType_BF16", x::BF16 as i64),
        ("XLA_FFI_ExecutionStage_EXECUTE", x::STAGE_EXECUTE as i64),
        ("XLA_FFI_ArgType_BUFFER", x::ARG_BUFFER as i64),
        ("XLA_FFI_RetType_BUFFER", x::RET_BUFFER as i64),
        ("XLA_FFI_AttrType_SCALAR", x::ATTR_SCALAR as i64),
        ("XLA_FFI_Extension_Metadata", x::EXTENSION_METADATA as i64),
        size!("XLA_FFI_DataType", DataType),
        size!("XLA_FFI_ExecutionStage", ExecutionStage),
        size!("XLA_FFI_Error_Code", ErrorCode),
        ("XLA_FFI_Extension_Base_STRUCT_SIZE", size_of::<ExtensionBase>() as i64),
        field!("XLA_FFI_Extension_Base.type", ExtensionBase, type_),
        field!("XLA_FFI_Extension_Base.next", ExtensionBase, next),
        ("XLA_FFI_Api_Version_STRUCT_SIZE", API_VERSION_STRUCT_SIZE as i64),
        field!("XLA_FFI_Api_Version.major_version", ApiVersion, major_version),
        field!("XLA_FFI_Api_Version.minor_version", ApiVersion, minor_version),
        ("XLA_FFI_Error_Create_Args_STRUCT_SIZE", ERROR_CREATE_ARGS_STRUCT_SIZE as i64),
        field!("XLA_FFI_Error_Create_Args.message", ErrorCreateArgs, message),
        field!("XLA_FFI_Error_Create_Args.errc", ErrorCreateArgs, errc),
        ("XLA_FFI_Error_GetMessage_Args_STRUCT_SIZE", ERROR_GET_MESSAGE_ARGS_STRUCT_SIZE as i64),
        field!("XLA_FFI_Error_GetMessage_Args.error", ErrorGetMessageArgs, error),
        field!("XLA_FFI_Error_GetMessage_Args.message", ErrorGetMessageArgs, message),
        ("XLA_FFI_Error_Destroy_Args_STRUCT_SIZE", ERROR_DESTROY_ARGS_STRUCT_SIZE as i64),
        field!("XLA_FFI_Error_Destroy_Args.error", ErrorDestroyArgs, error),
        ("XLA_FFI_Buffer_STRUCT_SIZE", BUFFER_STRUCT_SIZE as i64),
        field!("XLA_FFI_Buffer.dtype", Buffer, dtype),
        field!("XLA_FFI_Buffer.data", Buffer, data),
        field!("XLA_FFI_Buffer.rank", Buffer, rank),
        field!("XLA_FFI_Buffer.dims", Buffer, dims),
        size!("XLA_FFI_ByteSpan", ByteSpan),
        field!("XLA_FFI_ByteSpan.len", ByteSpan, len),
        size!("XLA_FFI_Scalar", x::Scalar),
        field!("XLA_FFI_Scalar.value", x::Scalar, value),
        ("XLA_FFI_Args_STRUCT_SIZE", size_of::<Args>() as i64),
        field!("XLA_FFI_Args.size", Args, size),
        field!("XLA_FFI_Args.types", Args, types),
        field!("XLA_FFI_Args.args", Args, args),
        ("XLA_FFI_Rets_STRUCT_SIZE", size_of::<Rets>() as i64),
        field!("XLA_FFI_Rets.size", Rets, size),
        field!("XLA_FFI_Rets.types", Rets, types),
        field!("XLA_FFI_Rets.rets", Rets, rets),
        ("XLA_FFI_Attrs_STRUCT_SIZE", size_of::<Attrs>() as i64),
        field!("XLA_FFI_Attrs.size", Attrs, size),
        field!("XLA_FFI_Attrs.types", Attrs, types),
        field!("XLA_FFI_Attrs.names", Attrs, names),
        field!("XLA_FFI_Attrs.attrs", Attrs, attrs),
        ("XLA_FFI_CallFrame_STRUCT_SIZE", CALL_FRAME_STRUCT_SIZE as i64),
        size!("XLA_FFI_CallFrame", CallFrame),
        field!("XLA_FFI_CallFrame.api", CallFrame, api),
        field!("XLA_FFI_CallFrame.ctx", CallFrame, ctx),
        field!("XLA_FFI_CallFrame.stage", CallFrame, stage),
        field!("XLA_FFI_CallFrame.args", CallFrame, args),
        field!("XLA_FFI_CallFrame.rets", CallFrame, rets),
        field!("XLA_FFI_CallFrame.attrs", CallFrame, attrs),
        field!("XLA_FFI_CallFrame.future", CallFrame, future),
        ("XLA_FFI_Stream_Get_Args_STRUCT_SIZE", STREAM_GET_ARGS_STRUCT_SIZE as i64),
        field!("XLA_FFI_Stream_Get_Args.ctx", StreamGetArgs, ctx),
        field!("XLA_FFI_Stream_Get_Args.stream", StreamGetArgs, stream),
        (
            "XLA_FFI_DeviceMemory_Allocate_Args_STRUCT_SIZE",
            DEVICE_MEMORY_ALLOCATE_ARGS_STRUCT_SIZE as i64,
        ),
        field!("XLA_FFI_DeviceMemory_Allocate_Args.ctx", DeviceMemoryAllocateArgs, ctx),
        field!("XLA_FFI_DeviceMemory_Allocate_Args.size", DeviceMemoryAllocateArgs, size),
        field!("XLA_FFI_DeviceMemory_Allocate_Args.alignment", DeviceMemoryAllocateArgs, alignment),
        field!("XLA_FFI_DeviceMemory_Allocate_Args.data", DeviceMemoryAllocateArgs, data),
        ("XLA_FFI_DeviceMemory_Free_Args_STRUCT_SIZE", DEVICE_MEMORY_FREE_ARGS_STRUCT_SIZE as i64),
        field!("XLA_FFI_DeviceMemory_Free_Args.ctx", DeviceMemoryFreeArgs, ctx),
        field!("XLA_FFI_DeviceMemory_Free_Args.size", DeviceMemoryFreeArgs, size),
        field!("XLA_FFI_DeviceMemory_Free_Args.data", DeviceMemoryFreeArgs, data),
        ("XLA_FFI_Metadata_STRUCT_SIZE", METADATA_STRUCT_SIZE as i64),
        size!("XLA_FFI_Metadata", Metadata),
        field!("XLA_FFI_Metadata.api_version", Metadata, api_version),
        field!("XLA_FFI_Metadata.traits", Metadata, traits),
        field!("XLA_FFI_Metadata.state_type_id", Metadata, state_type_id),
        ("XLA_FFI_Metadata_Extension_STRUCT_SIZE", METADATA_EXTENSION_STRUCT_SIZE as i64),
        field!("XLA_FFI_Metadata_Extension.metadata", MetadataExtension, metadata),
        field!("XLA_FFI_Api.api_version", Api, api_version),
        field!("XLA_FFI_Api.internal_api", Api, internal_api),
        field!("XLA_FFI_Api.XLA_FFI_Error_Create", Api, error_create),
        field!("XLA_FFI_Api.XLA_FFI_Error_GetMessage", Api, error_get_message),
        field!("XLA_FFI_Api.XLA_FFI_Error_Destroy", Api, error_destroy),
        field!("XLA_FFI_Api.XLA_FFI_Handler_Register", Api, handler_register),
        field!("XLA_FFI_Api.XLA_FFI_Stream_Get", Api, stream_get),
        field!("XLA_FFI_Api.XLA_FFI_DeviceMemory_Allocate", Api, device_memory_allocate),
        field!("XLA_FFI_Api.XLA_FFI_DeviceMemory_Free", Api, device_memory_free),
    ]
}

#[test]
fn mirrors_match_the_headers() {
    let mut headers = from_headers();
    let mut mismatches = Vec::new();
    for (name, value) in ours() {
        match headers.remove(name) {
            Some(expected) if expected == value => {}
            Some(expected) => mismatches.push(format!("{name}: header {expected}, ours {value}")),
            None => mismatches.push(format!("{name}: not in tests/abi_layout.cc")),
        }
    }
    for name in headers.keys() {
        mismatches.push(format!("{name}: not checked on the Rust side"));
    }
    assert!(mismatches.is_empty(), "layout mismatches:\n{}", mismatches.join("\n"));
}
