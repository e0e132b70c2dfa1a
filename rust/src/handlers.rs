//! The two XLA FFI handlers, forward and backward, as in the C++ binding
//! (cpp/jax_flash_attn_cpp.cc): decode the call, let the C ABI validate the
//! buffers and derive the shape, launch the kernel on XLA's stream.
//!
//!   forward:  args (q, k, v, alibi_slopes), rets (out, softmax_lse)
//!   backward: args (dout, q, k, v, out, softmax_lse, alibi_slopes),
//!             rets (dq, dk, dv, dq_accum, softmax_d)
//!   attrs:    softmax_scale f32, is_causal pred, window_left s32,
//!             window_right s32, softcap f32, has_alibi pred;
//!             the backward's also deterministic pred
//!
//! alibi_slopes is always a float32 [batch, heads] buffer; the kernels read
//! it only when has_alibi is set.

use std::ffi::c_void;

use crate::call_frame::{self, FfiError, Operands, Scalar, Signature};
use crate::kernels::{self, AttentionShape, BwdArgs, CAbi, Failure, FwdArgs, JfaBuffer, KernelLib};
use crate::xla_ffi::{self as xla, Buffer, CallFrame};

/// The attributes in binding order (that of the C++ binding's handlers).
const FWD_ATTRS: [(&str, xla::DataType); 6] = [
    ("softmax_scale", xla::F32),
    ("is_causal", xla::PRED),
    ("window_left", xla::S32),
    ("window_right", xla::S32),
    ("softcap", xla::F32),
    ("has_alibi", xla::PRED),
];
const BWD_ATTRS: [(&str, xla::DataType); 7] = [
    ("softmax_scale", xla::F32),
    ("is_causal", xla::PRED),
    ("window_left", xla::S32),
    ("window_right", xla::S32),
    ("softcap", xla::F32),
    ("has_alibi", xla::PRED),
    ("deterministic", xla::PRED),
];

pub static FWD: Signature = Signature { args: 4, rets: 2, attrs: &FWD_ATTRS };
pub static BWD: Signature = Signature { args: 7, rets: 5, attrs: &BWD_ATTRS };

/// The forward handler XLA calls (registered as jflash_attn_rust_fwd).
pub unsafe extern "C" fn flash_fwd(frame: *mut CallFrame) -> *mut xla::Error {
    fwd_with(&CAbi, frame)
}

/// The backward handler XLA calls (registered as jflash_attn_rust_bwd).
pub unsafe extern "C" fn flash_bwd(frame: *mut CallFrame) -> *mut xla::Error {
    bwd_with(&CAbi, frame)
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

/// The C ABI status mapped to XLA's codes, as the C++ binding maps it.
fn to_ffi_error(failure: Failure) -> FfiError {
    let code = match failure.status {
        kernels::JFA_INVALID_ARGUMENT => xla::ERROR_INVALID_ARGUMENT,
        kernels::JFA_UNSUPPORTED => xla::ERROR_UNIMPLEMENTED,
        _ => xla::ERROR_INTERNAL,
    };
    FfiError { code, message: failure.message }
}

/// The option fields of the shape and has_alibi, from the attributes
/// (FWD_ATTRS or BWD_ATTRS order).
fn options(attrs: &[Scalar]) -> (AttentionShape, bool) {
    use Scalar::{Pred, F32, S32};
    let (common, rest) = attrs.split_at(FWD_ATTRS.len());
    let &[F32(softmax_scale), Pred(is_causal), S32(window_left), S32(window_right), F32(softcap), Pred(has_alibi)] =
        common
    else {
        unreachable!("attributes are decoded per FWD_ATTRS");
    };
    let deterministic = match rest {
        [] => false,
        &[Pred(deterministic)] => deterministic,
        _ => unreachable!("attributes are decoded per BWD_ATTRS"),
    };
    let shape = AttentionShape {
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

/// The slopes' device pointer when the call has ALiBi, else NULL.
fn alibi(slopes: &Buffer, has_alibi: bool) -> *const f32 {
    if has_alibi {
        slopes.data as *const f32
    } else {
        std::ptr::null()
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

fn fwd(lib: &impl KernelLib, ops: &Operands) -> Result<(), FfiError> {
    let (mut shape, has_alibi) = options(&ops.attrs);
    lib.fwd_shape(&describe_all(ops), &mut shape).map_err(to_ffi_error)?;
    let [q, k, v] = [0, 1, 2].map(|i| ops.args[i].data as *const c_void);
    let args = FwdArgs {
        shape,
        q,
        k,
        v,
        out: ops.rets[0].data,
        softmax_lse: ops.rets[1].data as *mut f32,
        alibi_slopes: alibi(ops.args[3], has_alibi),
        alibi_slopes_batch_stride: shape.num_heads,
    };
    // SAFETY: the buffers are XLA's device buffers of the validated shapes.
    unsafe { lib.mha_fwd(&args, ops.stream) }.map_err(to_ffi_error)
}

fn bwd(lib: &impl KernelLib, ops: &Operands) -> Result<(), FfiError> {
    let (mut shape, has_alibi) = options(&ops.attrs);
    lib.bwd_shape(&describe_all(ops), &mut shape).map_err(to_ffi_error)?;
    let [dout, q, k, v, out, lse] = [0, 1, 2, 3, 4, 5].map(|i| ops.args[i].data as *const c_void);
    let [dq, dk, dv, dq_accum, softmax_d] = [0, 1, 2, 3, 4].map(|i| ops.rets[i].data);
    let args = BwdArgs {
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
        alibi_slopes: alibi(ops.args[6], has_alibi),
        alibi_slopes_batch_stride: shape.num_heads,
    };
    // SAFETY: as in fwd.
    unsafe { lib.mha_bwd(&args, ops.stream) }.map_err(to_ffi_error)
}
