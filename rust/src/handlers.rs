//! The XLA FFI handlers, forward and backward, dense and varlen (packed
//! sequences), and the KV-cache (decoding) forward, as in the C++ binding
//! (cpp/jax_flash_attn_cpp.cc): decode the call, let the C ABI validate the
//! buffers and derive the shape, launch the kernel on XLA's stream.
//!
//!   forward:  args (q, k, v, alibi_slopes), rets (out, softmax_lse)
//!   backward: args (dout, q, k, v, out, softmax_lse, alibi_slopes),
//!             rets (dq, dk, dv, dq_accum, softmax_d)
//!   varlen forward:  args (q, k, v, cu_seqlens_q, cu_seqlens_k, alibi_slopes),
//!                    rets (out, softmax_lse)
//!   varlen backward: args (dout, q, k, v, out, softmax_lse, cu_seqlens_q,
//!                    cu_seqlens_k, alibi_slopes), rets as the backward's
//!   KV-cache forward: args (q, k_cache, v_cache, seqlens_k, block_table,
//!                     alibi_slopes), rets (out, softmax_lse, workspace)
//!   attrs:    softmax_scale f32, is_causal pred, window_left s32,
//!             window_right s32, softcap f32, has_alibi pred;
//!             the varlen ones' then max_seqlen_q s32, max_seqlen_k s32;
//!             the backwards' last deterministic pred;
//!             the KV-cache one's then has_block_table pred, num_splits s32
//!
//! alibi_slopes is always a float32 buffer, [batch, heads] or (no ALiBi) the
//! empty [0], block_table an int32 [batch, max_blocks_per_seq] one; the
//! kernels read them only when has_alibi / has_block_table is set. The dense
//! forward and backward also take scratch from XLA at run time
//! (jfa_fwd_workspace_bytes, jfa_bwd_workspace_bytes).

use std::ffi::c_void;

use crate::call_frame::{self, FfiError, Operands, Scalar, Signature};
use crate::kernels::{
    self, AttentionShape, BwdArgs, CAbi, Failure, FwdArgs, JfaBuffer, KernelLib, KvcacheFwdArgs,
    VarlenBwdArgs, VarlenFwdArgs,
};
use crate::xla_ffi::{self as xla, Buffer, CallFrame};

/// The attributes every handler takes, in binding order (that of the C++
/// binding's `with_options`), followed by the handler's own.
macro_rules! attrs {
    ($($own:expr),* $(,)?) => {
        [
            ("softmax_scale", xla::F32),
            ("is_causal", xla::PRED),
            ("window_left", xla::S32),
            ("window_right", xla::S32),
            ("softcap", xla::F32),
            ("has_alibi", xla::PRED),
            $($own),*
        ]
    };
}

const FWD_ATTRS: [(&str, xla::DataType); 6] = attrs![];
const BWD_ATTRS: [(&str, xla::DataType); 7] = attrs![("deterministic", xla::PRED)];
const VARLEN_FWD_ATTRS: [(&str, xla::DataType); 8] =
    attrs![("max_seqlen_q", xla::S32), ("max_seqlen_k", xla::S32)];
const VARLEN_BWD_ATTRS: [(&str, xla::DataType); 9] = attrs![
    ("max_seqlen_q", xla::S32),
    ("max_seqlen_k", xla::S32),
    ("deterministic", xla::PRED),
];
const KVCACHE_FWD_ATTRS: [(&str, xla::DataType); 8] =
    attrs![("has_block_table", xla::PRED), ("num_splits", xla::S32)];

pub static FWD: Signature = Signature { args: 4, rets: 2, attrs: &FWD_ATTRS };
pub static BWD: Signature = Signature { args: 7, rets: 5, attrs: &BWD_ATTRS };
pub static VARLEN_FWD: Signature = Signature { args: 6, rets: 2, attrs: &VARLEN_FWD_ATTRS };
pub static VARLEN_BWD: Signature = Signature { args: 9, rets: 5, attrs: &VARLEN_BWD_ATTRS };
pub static KVCACHE_FWD: Signature = Signature { args: 6, rets: 3, attrs: &KVCACHE_FWD_ATTRS };

/// The forward handler XLA calls (registered as jflash_attn_rust_fwd).
pub unsafe extern "C" fn flash_fwd(frame: *mut CallFrame) -> *mut xla::Error {
    fwd_with(&CAbi, frame)
}

/// The backward handler XLA calls (registered as jflash_attn_rust_bwd).
pub unsafe extern "C" fn flash_bwd(frame: *mut CallFrame) -> *mut xla::Error {
    bwd_with(&CAbi, frame)
}

/// The varlen forward handler (registered as jflash_attn_rust_varlen_fwd).
pub unsafe extern "C" fn flash_varlen_fwd(frame: *mut CallFrame) -> *mut xla::Error {
    varlen_fwd_with(&CAbi, frame)
}

/// The varlen backward handler (registered as jflash_attn_rust_varlen_bwd).
pub unsafe extern "C" fn flash_varlen_bwd(frame: *mut CallFrame) -> *mut xla::Error {
    varlen_bwd_with(&CAbi, frame)
}

/// The KV-cache forward handler (registered as jflash_attn_rust_kvcache_fwd).
pub unsafe extern "C" fn flash_kvcache_fwd(frame: *mut CallFrame) -> *mut xla::Error {
    kvcache_fwd_with(&CAbi, frame)
}

/// # Safety
/// As `call_frame::handle`.
pub unsafe fn fwd_with(lib: &impl KernelLib, frame: *mut CallFrame) -> *mut xla::Error {
    call_frame::handle(frame, &FWD, |ops| fwd(lib, ops))
}

/// # Safety
/// As `call_frame::handle`.
pub unsafe fn bwd_with(lib: &impl KernelLib, frame: *mut CallFrame) -> *mut xla::Error {
    call_frame::handle(frame, &BWD, |ops| bwd(lib, ops))
}

/// # Safety
/// As `call_frame::handle`.
pub unsafe fn varlen_fwd_with(lib: &impl KernelLib, frame: *mut CallFrame) -> *mut xla::Error {
    call_frame::handle(frame, &VARLEN_FWD, |ops| varlen_fwd(lib, ops))
}

/// # Safety
/// As `call_frame::handle`.
pub unsafe fn varlen_bwd_with(lib: &impl KernelLib, frame: *mut CallFrame) -> *mut xla::Error {
    call_frame::handle(frame, &VARLEN_BWD, |ops| varlen_bwd(lib, ops))
}

/// # Safety
/// As `call_frame::handle`.
pub unsafe fn kvcache_fwd_with(lib: &impl KernelLib, frame: *mut CallFrame) -> *mut xla::Error {
    call_frame::handle(frame, &KVCACHE_FWD, |ops| kvcache_fwd(lib, ops))
}

/// The C ABI status mapped to XLA's codes, as the C++ binding maps it.
fn to_ffi_error(failure: Failure) -> FfiError {
    let code = match failure.status {
        kernels::JFA_INVALID_ARGUMENT => xla::ERROR_INVALID_ARGUMENT,
        kernels::JFA_UNSUPPORTED => xla::ERROR_UNIMPLEMENTED,
        _ => xla::ERROR_INTERNAL,
    };
    FfiError { code, message: failure.message }
}

/// The option fields of the shape and has_alibi, from the attributes (in
/// the order of one of the *_ATTRS); for varlen calls also the seqlen bounds,
/// which the C ABI takes in seqlen_q / seqlen_k.
fn options(attrs: &[Scalar]) -> (AttentionShape, bool) {
    use Scalar::{Pred, F32, S32};
    let (common, rest) = attrs.split_at(FWD_ATTRS.len());
    let &[F32(softmax_scale), Pred(is_causal), S32(window_left), S32(window_right), F32(softcap), Pred(has_alibi)] =
        common
    else {
        unreachable!("attributes are decoded per FWD_ATTRS");
    };
    // Only the varlen signatures have s32 attributes past the common six.
    let ((seqlen_q, seqlen_k), rest) = match rest {
        &[S32(max_seqlen_q), S32(max_seqlen_k), ref rest @ ..] => {
            ((max_seqlen_q.into(), max_seqlen_k.into()), rest)
        }
        _ => ((0, 0), rest),
    };
    let deterministic = match rest {
        [] => false,
        &[Pred(deterministic)] => deterministic,
        _ => unreachable!("attributes are decoded per a *_ATTRS"),
    };
    let shape = AttentionShape {
        seqlen_q,
        seqlen_k,
        softmax_scale,
        is_causal: is_causal as i32,
        window_left,
        window_right,
        softcap,
        deterministic: deterministic as i32,
        ..Default::default()
    };
    (shape, has_alibi)
}

/// The slopes' device pointer when the call has ALiBi, else NULL. The empty
/// placeholder (float32 [0]) stands for no slopes: with has_alibi the call
/// would read none.
fn alibi(slopes: &Buffer, has_alibi: bool) -> Result<*const f32, FfiError> {
    match (has_alibi, elements(slopes)) {
        (false, _) => Ok(std::ptr::null()),
        (true, 0) => Err(FfiError::invalid_argument(
            "alibi_slopes: has_alibi is set but the slopes are the empty placeholder, shape (0,)",
        )),
        (true, _) => Ok(slopes.data as *const f32),
    }
}

/// A buffer's element count (its dims were validated by the C ABI).
fn elements(b: &Buffer) -> i64 {
    // SAFETY: XLA's buffers have `rank` dims.
    (0..b.rank as usize).map(|i| unsafe { *b.dims.add(i) }).product()
}

fn describe(b: &Buffer) -> JfaBuffer {
    JfaBuffer { xla_dtype: b.dtype, rank: b.rank, dims: b.dims }
}

fn describe_all(ops: &Operands) -> Vec<JfaBuffer> {
    ops.args.iter().chain(ops.rets.iter()).map(|b| describe(b)).collect()
}

/// The forward's arguments: q, k, v first among the args, the slopes the
/// `alibi_index`-th (the varlen call has cu_seqlens_q/k before them, the
/// KV-cache one seqlens_k and block_table).
fn fwd_args(
    ops: &Operands,
    shape: AttentionShape,
    alibi_index: usize,
    has_alibi: bool,
) -> Result<FwdArgs, FfiError> {
    let [q, k, v] = [0, 1, 2].map(|i| ops.args[i].data as *const c_void);
    Ok(FwdArgs {
        shape,
        q,
        k,
        v,
        out: ops.rets[0].data,
        softmax_lse: ops.rets[1].data as *mut f32,
        alibi_slopes: alibi(ops.args[alibi_index], has_alibi)?,
        alibi_slopes_batch_stride: shape.num_heads,
        workspace: std::ptr::null_mut(),
        workspace_bytes: 0,
    })
}

/// The backward's: dout, q, k, v, out, softmax_lse first, as in fwd_args.
fn bwd_args(
    ops: &Operands,
    shape: AttentionShape,
    alibi_index: usize,
    has_alibi: bool,
) -> Result<BwdArgs, FfiError> {
    let [dout, q, k, v, out, lse] = [0, 1, 2, 3, 4, 5].map(|i| ops.args[i].data as *const c_void);
    let [dq, dk, dv, dq_accum, softmax_d] = [0, 1, 2, 3, 4].map(|i| ops.rets[i].data);
    Ok(BwdArgs {
        shape,
        q,
        k,
        v,
        out,
        softmax_lse: lse as *const f32,
        dout,
        dq,
        dk,
        dv,
        dq_accum: dq_accum as *mut f32,
        softmax_d: softmax_d as *mut f32,
        dq_accum_elems: elements(ops.rets[3]),
        alibi_slopes: alibi(ops.args[alibi_index], has_alibi)?,
        alibi_slopes_batch_stride: shape.num_heads,
        workspace: std::ptr::null_mut(),
        workspace_bytes: 0,
    })
}

/// Scratch of `bytes` from XLA, freed with `ops` after the launch, as
/// (address, bytes); none (null, 0) where XLA has none to give or none is
/// wanted. Without it a call only runs slower, which stderr is told once: a
/// silent fallback once hid that every allocation failed. 16-byte aligned, as
/// the C ABI asks: XLA refuses any alignment over 16 (its memory is 256-byte
/// aligned anyway).
fn workspace(ops: &Operands, bytes: i64) -> (*mut c_void, i64) {
    let Some(wanted) = usize::try_from(bytes).ok().filter(|&b| b > 0) else {
        return (std::ptr::null_mut(), 0);
    };
    match ops.scratch.allocate(wanted, 16) {
        Ok(data) => (data, bytes),
        Err(why) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "jflash_attn: XLA gave no scratch ({bytes} bytes: {why}) for a Hopper kernel's \
                     cut last round; such calls run uncut, slower (printed once)"
                )
            });
            (std::ptr::null_mut(), 0)
        }
    }
}

/// An int32 buffer's device pointer (cu_seqlens, seqlens_k, block_table).
fn int32_data(b: &Buffer) -> *const i32 {
    b.data as *const i32
}

fn fwd(lib: &impl KernelLib, ops: &Operands) -> Result<(), FfiError> {
    let (mut shape, has_alibi) = options(&ops.attrs);
    lib.fwd_shape(&describe_all(ops), &mut shape).map_err(to_ffi_error)?;
    let mut args = fwd_args(ops, shape, 3, has_alibi)?;
    (args.workspace, args.workspace_bytes) =
        workspace(ops, lib.fwd_workspace_bytes(&shape, has_alibi));
    // SAFETY: the buffers are XLA's device buffers of the validated shapes.
    unsafe { lib.mha_fwd(&args, ops.stream) }.map_err(to_ffi_error)
}

fn bwd(lib: &impl KernelLib, ops: &Operands) -> Result<(), FfiError> {
    let (mut shape, has_alibi) = options(&ops.attrs);
    lib.bwd_shape(&describe_all(ops), &mut shape).map_err(to_ffi_error)?;
    let mut args = bwd_args(ops, shape, 6, has_alibi)?;
    (args.workspace, args.workspace_bytes) =
        workspace(ops, lib.bwd_workspace_bytes(&shape, has_alibi));
    // SAFETY: as in fwd.
    unsafe { lib.mha_bwd(&args, ops.stream) }.map_err(to_ffi_error)
}

fn varlen_fwd(lib: &impl KernelLib, ops: &Operands) -> Result<(), FfiError> {
    let (mut shape, has_alibi) = options(&ops.attrs);
    let (total_q, total_k) =
        lib.varlen_fwd_shape(&describe_all(ops), &mut shape).map_err(to_ffi_error)?;
    let args = VarlenFwdArgs {
        base: fwd_args(ops, shape, 5, has_alibi)?,
        cu_seqlens_q: int32_data(ops.args[3]),
        cu_seqlens_k: int32_data(ops.args[4]),
        total_q,
        total_k,
    };
    // SAFETY: as in fwd; the C ABI checked that cu_seqlens are int32 [batch + 1].
    unsafe { lib.mha_varlen_fwd(&args, ops.stream) }.map_err(to_ffi_error)
}

fn varlen_bwd(lib: &impl KernelLib, ops: &Operands) -> Result<(), FfiError> {
    let (mut shape, has_alibi) = options(&ops.attrs);
    let (total_q, total_k) =
        lib.varlen_bwd_shape(&describe_all(ops), &mut shape).map_err(to_ffi_error)?;
    let args = VarlenBwdArgs {
        base: bwd_args(ops, shape, 8, has_alibi)?,
        cu_seqlens_q: int32_data(ops.args[6]),
        cu_seqlens_k: int32_data(ops.args[7]),
        total_q,
        total_k,
    };
    // SAFETY: as in varlen_fwd.
    unsafe { lib.mha_varlen_bwd(&args, ops.stream) }.map_err(to_ffi_error)
}

fn kvcache_fwd(lib: &impl KernelLib, ops: &Operands) -> Result<(), FfiError> {
    // options() reads the common six; this call's own two follow them.
    let (common, own) = ops.attrs.split_at(FWD_ATTRS.len());
    let &[Scalar::Pred(has_block_table), Scalar::S32(num_splits)] = own else {
        unreachable!("attributes are decoded per KVCACHE_FWD_ATTRS");
    };
    let (mut shape, has_alibi) = options(common);
    let (max_blocks_per_seq, page_block_size) = lib
        .kvcache_fwd_shape(&describe_all(ops), has_block_table, &mut shape)
        .map_err(to_ffi_error)?;
    let block_table = if has_block_table { int32_data(ops.args[4]) } else { std::ptr::null() };
    let args = KvcacheFwdArgs {
        base: fwd_args(ops, shape, 5, has_alibi)?,
        seqlens_k: int32_data(ops.args[3]),
        block_table,
        max_blocks_per_seq,
        page_block_size,
        num_splits,
        workspace: ops.rets[2].data as *mut f32,
        workspace_elems: elements(ops.rets[2]),
    };
    // SAFETY: as in fwd; the C ABI checked seqlens_k, the block table and the
    // workspace, and checks num_splits and the workspace's size itself.
    unsafe { lib.mha_kvcache_fwd(&args, ops.stream) }.map_err(to_ffi_error)
}
