//! The kernel library's C ABI (`cpp/include/jax_flash_attn/flash_attn.h`),
//! declared by hand; `tests/abi_layout.cc` checks these declarations against
//! the header (struct layouts and constants at test time, function types when
//! it compiles).
//!
//! The handlers reach the library through the `KernelLib` trait, so that the
//! unit tests can watch what a handler would launch without a GPU.

// The header is mirrored whole; not every item is used outside the tests.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_void, CStr};

pub const JFA_ABI_VERSION: c_int = 8;

// jfa_status
pub const JFA_OK: c_int = 0;
pub const JFA_INVALID_ARGUMENT: c_int = 1;
pub const JFA_UNSUPPORTED: c_int = 2;
pub const JFA_CUDA_ERROR: c_int = 3;

// jfa_dtype
pub const JFA_FLOAT16: c_int = 0;
pub const JFA_BFLOAT16: c_int = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionShape {
    pub batch: i64,
    pub seqlen_q: i64,
    pub seqlen_k: i64,
    pub num_heads: i64,
    pub num_heads_k: i64,
    pub head_dim: i64,
    pub dtype: c_int,
    pub softmax_scale: f32,
    pub is_causal: i32,
    pub window_left: i32,
    pub window_right: i32,
    pub softcap: f32,
    pub deterministic: i32,
}

#[repr(C)]
pub struct FwdArgs {
    pub shape: AttentionShape,
    pub q: *const c_void,
    pub k: *const c_void,
    pub v: *const c_void,
    pub out: *mut c_void,
    pub softmax_lse: *mut f32,
    pub alibi_slopes: *const f32,
    pub alibi_slopes_batch_stride: i64,
    pub workspace: *mut c_void,
    pub workspace_bytes: i64,
}

#[repr(C)]
pub struct BwdArgs {
    pub shape: AttentionShape,
    pub q: *const c_void,
    pub k: *const c_void,
    pub v: *const c_void,
    pub out: *const c_void,
    pub softmax_lse: *const f32,
    pub dout: *const c_void,
    pub dq: *mut c_void,
    pub dk: *mut c_void,
    pub dv: *mut c_void,
    pub dq_accum: *mut f32,
    pub softmax_d: *mut f32,
    pub dq_accum_elems: i64,
    pub alibi_slopes: *const f32,
    pub alibi_slopes_batch_stride: i64,
    pub workspace: *mut c_void,
    pub workspace_bytes: i64,
}

/// Packed sequences: `base` as for a dense call, plus the int32 [batch + 1]
/// cumulative sequence lengths and the token counts.
#[repr(C)]
pub struct VarlenFwdArgs {
    pub base: FwdArgs,
    pub cu_seqlens_q: *const i32,
    pub cu_seqlens_k: *const i32,
    pub total_q: i64,
    pub total_k: i64,
}

#[repr(C)]
pub struct VarlenBwdArgs {
    pub base: BwdArgs,
    pub cu_seqlens_q: *const i32,
    pub cu_seqlens_k: *const i32,
    pub total_q: i64,
    pub total_k: i64,
}

/// Decoding against a KV cache: `base` with the caches as k and v (paged or
/// not), plus the int32 [batch] cache lengths, the block table (NULL unless
/// paged) and the split kernels' float32 workspace.
#[repr(C)]
pub struct KvcacheFwdArgs {
    pub base: FwdArgs,
    pub seqlens_k: *const i32,
    pub block_table: *const i32,
    pub max_blocks_per_seq: i64,
    pub page_block_size: i64,
    pub num_splits: i32,
    pub workspace: *mut f32,
    pub workspace_elems: i64,
}

/// Hopper launches since the library loaded: last rounds run cut, per
/// direction, and cuts undone for want of scratch (jfa_get_launch_counts).
#[repr(C)]
#[derive(Default)]
pub struct LaunchCounts {
    pub fwd_cut: u64,
    pub bwd_cut: u64,
    pub uncut_for_scratch: u64,
}

/// A buffer as XLA describes it: dtype code, rank, dims.
#[repr(C)]
pub struct JfaBuffer {
    pub xla_dtype: i32,
    pub rank: i64,
    pub dims: *const i64,
}

extern "C" {
    pub fn jfa_fwd_shape_from_buffers(
        buffers: *const JfaBuffer,
        num_buffers: usize,
        shape: *mut AttentionShape,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_bwd_shape_from_buffers(
        buffers: *const JfaBuffer,
        num_buffers: usize,
        shape: *mut AttentionShape,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_varlen_fwd_shape_from_buffers(
        buffers: *const JfaBuffer,
        num_buffers: usize,
        shape: *mut AttentionShape,
        total_q: *mut i64,
        total_k: *mut i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_varlen_bwd_shape_from_buffers(
        buffers: *const JfaBuffer,
        num_buffers: usize,
        shape: *mut AttentionShape,
        total_q: *mut i64,
        total_k: *mut i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_kvcache_fwd_shape_from_buffers(
        buffers: *const JfaBuffer,
        num_buffers: usize,
        paged: c_int,
        shape: *mut AttentionShape,
        max_blocks_per_seq: *mut i64,
        page_block_size: *mut i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_kvcache_num_splits(
        shape: *const AttentionShape,
        num_splits: c_int,
        num_sms: c_int,
    ) -> i32;
    pub fn jfa_kvcache_workspace_elems(shape: *const AttentionShape, num_splits: c_int) -> i64;
    pub fn jfa_bwd_workspace_elems(
        shape: *const AttentionShape,
        num_sms: c_int,
        dq_accum_elems: *mut i64,
        softmax_d_elems: *mut i64,
    );
    pub fn jfa_varlen_bwd_workspace_elems(
        shape: *const AttentionShape,
        total_q: i64,
        num_sms: c_int,
        dq_accum_elems: *mut i64,
        softmax_d_elems: *mut i64,
    );
    pub fn jfa_num_sms(
        device: c_int,
        num_sms: *mut c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_check_shape(shape: *const AttentionShape, err: *mut c_char, err_len: usize)
        -> c_int;
    pub fn jfa_mha_fwd(
        args: *const FwdArgs,
        cuda_stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_fwd_workspace_bytes(shape: *const AttentionShape, has_alibi: c_int) -> i64;
    pub fn jfa_bwd_workspace_bytes(shape: *const AttentionShape, has_alibi: c_int) -> i64;
    pub fn jfa_mha_bwd(
        args: *const BwdArgs,
        cuda_stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_mha_varlen_fwd(
        args: *const VarlenFwdArgs,
        cuda_stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_mha_varlen_bwd(
        args: *const VarlenBwdArgs,
        cuda_stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_mha_kvcache_fwd(
        args: *const KvcacheFwdArgs,
        cuda_stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn jfa_has_kvcache_kernel(dtype: c_int, head_dim: i64) -> c_int;
    pub fn jfa_has_kernel(dtype: c_int, head_dim: i64) -> c_int;
    pub fn jfa_has_sm90_kernel(dtype: c_int, head_dim: i64) -> c_int;
    pub fn jfa_fwd_uses_sm90(
        shape: *const AttentionShape,
        has_alibi: c_int,
        is_varlen: c_int,
        cc_major: c_int,
        cc_minor: c_int,
    ) -> c_int;
    pub fn jfa_has_sm90_bwd_kernel(dtype: c_int, head_dim: i64) -> c_int;
    pub fn jfa_bwd_uses_sm90(
        shape: *const AttentionShape,
        has_alibi: c_int,
        is_varlen: c_int,
        cc_major: c_int,
        cc_minor: c_int,
    ) -> c_int;
    pub fn jfa_build_config() -> *const c_char;
    pub fn jfa_abi_version() -> c_int;
    pub fn jfa_get_launch_counts(counts: *mut LaunchCounts);
}

/// A nonzero jfa_status and the library's message for it.
#[derive(Debug, PartialEq)]
pub struct Failure {
    pub status: c_int,
    pub message: String,
}

/// The size of the message buffer, as in the C++ binding.
const ERR_LEN: usize = 1024;

/// Calls a C ABI function that reports errors through (err, err_len).
pub fn with_err(call: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), Failure> {
    let mut err = [0 as c_char; ERR_LEN];
    let status = call(err.as_mut_ptr(), ERR_LEN);
    if status == JFA_OK {
        return Ok(());
    }
    err[ERR_LEN - 1] = 0;
    // SAFETY: NUL-terminated above at the latest.
    let message = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    Err(Failure { status, message })
}

/// What the handlers need of the kernel library.
pub trait KernelLib {
    /// Validates the forward buffers; fills the shape fields they determine.
    fn fwd_shape(&self, buffers: &[JfaBuffer], shape: &mut AttentionShape) -> Result<(), Failure>;
    fn bwd_shape(&self, buffers: &[JfaBuffer], shape: &mut AttentionShape) -> Result<(), Failure>;
    /// # Safety
    /// The pointers in `args` are device buffers of the shape's sizes.
    unsafe fn mha_fwd(&self, args: &FwdArgs, stream: *mut c_void) -> Result<(), Failure>;
    /// Scratch bytes a dense forward of `shape` can use on the current GPU.
    fn fwd_workspace_bytes(&self, shape: &AttentionShape, has_alibi: bool) -> i64;
    /// # Safety
    /// As `mha_fwd`.
    unsafe fn mha_bwd(&self, args: &BwdArgs, stream: *mut c_void) -> Result<(), Failure>;
    /// The same for a dense backward.
    fn bwd_workspace_bytes(&self, shape: &AttentionShape, has_alibi: bool) -> i64;
    /// The varlen forward's buffers; also gives (total_q, total_k).
    fn varlen_fwd_shape(
        &self,
        buffers: &[JfaBuffer],
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure>;
    fn varlen_bwd_shape(
        &self,
        buffers: &[JfaBuffer],
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure>;
    /// # Safety
    /// As `mha_fwd`; cu_seqlens_q/k hold batch + 1 offsets up to the totals.
    unsafe fn mha_varlen_fwd(
        &self,
        args: &VarlenFwdArgs,
        stream: *mut c_void,
    ) -> Result<(), Failure>;
    /// # Safety
    /// As `mha_varlen_fwd`.
    unsafe fn mha_varlen_bwd(
        &self,
        args: &VarlenBwdArgs,
        stream: *mut c_void,
    ) -> Result<(), Failure>;
    /// The KV-cache forward's buffers, the block table read only when
    /// `paged`; also gives (max_blocks_per_seq, page_block_size), (0, 0) if not.
    fn kvcache_fwd_shape(
        &self,
        buffers: &[JfaBuffer],
        paged: bool,
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure>;
    /// # Safety
    /// As `mha_fwd`; seqlens_k holds batch lengths within the cache, the
    /// block table (if any) page indices within it.
    unsafe fn mha_kvcache_fwd(
        &self,
        args: &KvcacheFwdArgs,
        stream: *mut c_void,
    ) -> Result<(), Failure>;
}

/// jfa_varlen_{fwd,bwd}_shape_from_buffers.
type VarlenShapeFn = unsafe extern "C" fn(
    *const JfaBuffer,
    usize,
    *mut AttentionShape,
    *mut i64,
    *mut i64,
    *mut c_char,
    usize,
) -> c_int;

/// Calls one of the varlen validators; returns (total_q, total_k).
fn varlen_shape(
    validate: VarlenShapeFn,
    buffers: &[JfaBuffer],
    shape: &mut AttentionShape,
) -> Result<(i64, i64), Failure> {
    let (mut total_q, mut total_k) = (0, 0);
    // SAFETY: every JfaBuffer's dims point at `rank` values (the caller's
    // contract); the totals are locals.
    with_err(|err, len| unsafe {
        validate(buffers.as_ptr(), buffers.len(), shape, &mut total_q, &mut total_k, err, len)
    })?;
    Ok((total_q, total_k))
}

/// The linked kernel library (//cpp:flash_attn_kernels).
pub struct CAbi;

impl KernelLib for CAbi {
    fn fwd_shape(&self, buffers: &[JfaBuffer], shape: &mut AttentionShape) -> Result<(), Failure> {
        // SAFETY: every JfaBuffer's dims point at `rank` values (the caller's contract).
        with_err(|err, len| unsafe {
            jfa_fwd_shape_from_buffers(buffers.as_ptr(), buffers.len(), shape, err, len)
        })
    }

    fn bwd_shape(&self, buffers: &[JfaBuffer], shape: &mut AttentionShape) -> Result<(), Failure> {
        // SAFETY: as in fwd_shape.
        with_err(|err, len| unsafe {
            jfa_bwd_shape_from_buffers(buffers.as_ptr(), buffers.len(), shape, err, len)
        })
    }

    unsafe fn mha_fwd(&self, args: &FwdArgs, stream: *mut c_void) -> Result<(), Failure> {
        with_err(|err, len| jfa_mha_fwd(args, stream, err, len))
    }

    fn fwd_workspace_bytes(&self, shape: &AttentionShape, has_alibi: bool) -> i64 {
        // SAFETY: a pointer to a live shape; the function only reads it.
        unsafe { jfa_fwd_workspace_bytes(shape, has_alibi as c_int) }
    }

    unsafe fn mha_bwd(&self, args: &BwdArgs, stream: *mut c_void) -> Result<(), Failure> {
        with_err(|err, len| jfa_mha_bwd(args, stream, err, len))
    }

    fn bwd_workspace_bytes(&self, shape: &AttentionShape, has_alibi: bool) -> i64 {
        // SAFETY: as in fwd_workspace_bytes.
        unsafe { jfa_bwd_workspace_bytes(shape, has_alibi as c_int) }
    }

    fn varlen_fwd_shape(
        &self,
        buffers: &[JfaBuffer],
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure> {
        varlen_shape(jfa_varlen_fwd_shape_from_buffers, buffers, shape)
    }

    fn varlen_bwd_shape(
        &self,
        buffers: &[JfaBuffer],
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure> {
        varlen_shape(jfa_varlen_bwd_shape_from_buffers, buffers, shape)
    }

    unsafe fn mha_varlen_fwd(
        &self,
        args: &VarlenFwdArgs,
        stream: *mut c_void,
    ) -> Result<(), Failure> {
        with_err(|err, len| jfa_mha_varlen_fwd(args, stream, err, len))
    }

    unsafe fn mha_varlen_bwd(
        &self,
        args: &VarlenBwdArgs,
        stream: *mut c_void,
    ) -> Result<(), Failure> {
        with_err(|err, len| jfa_mha_varlen_bwd(args, stream, err, len))
    }

    fn kvcache_fwd_shape(
        &self,
        buffers: &[JfaBuffer],
        paged: bool,
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure> {
        let (mut max_blocks_per_seq, mut page_block_size) = (0, 0);
        // SAFETY: as in varlen_shape.
        with_err(|err, len| unsafe {
            jfa_kvcache_fwd_shape_from_buffers(
                buffers.as_ptr(),
                buffers.len(),
                paged as c_int,
                shape,
                &mut max_blocks_per_seq,
                &mut page_block_size,
                err,
                len,
            )
        })?;
        Ok((max_blocks_per_seq, page_block_size))
    }

    unsafe fn mha_kvcache_fwd(
        &self,
        args: &KvcacheFwdArgs,
        stream: *mut c_void,
    ) -> Result<(), Failure> {
        with_err(|err, len| jfa_mha_kvcache_fwd(args, stream, err, len))
    }
}
