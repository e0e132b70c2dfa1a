//! A stand-in for XLA in the tests: an XLA_FFI_Api whose errors are boxed
//! (code, message) pairs, hand-built call frames, and a kernel library that
//! validates with the real C ABI but records launches instead of running them.

// The frame's parts are boxed so that their addresses stay put while the
// vectors holding them grow.
#![allow(clippy::vec_box)]

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CStr, CString};
use std::mem::size_of;
use std::ptr;

use crate::kernels::{
    AttentionShape, BwdArgs, CAbi, Failure, FwdArgs, JfaBuffer, KernelLib, KvcacheFwdArgs,
    VarlenBwdArgs, VarlenFwdArgs,
};
use crate::xla_ffi::{self as xla, Api, ApiVersion, CallFrame};

struct FakeError {
    code: c_int,
    message: CString,
}

unsafe extern "C" fn error_create(args: *mut xla::ErrorCreateArgs) -> *mut xla::Error {
    let args = &*args;
    assert_eq!(args.struct_size, xla::ERROR_CREATE_ARGS_STRUCT_SIZE);
    let message = CStr::from_ptr(args.message).to_owned();
    Box::into_raw(Box::new(FakeError { code: args.errc, message })) as *mut xla::Error
}

unsafe extern "C" fn error_get_message(args: *mut xla::ErrorGetMessageArgs) {
    let args = &mut *args;
    args.message = (*(args.error as *const FakeError)).message.as_ptr();
}

unsafe extern "C" fn error_destroy(args: *mut xla::ErrorDestroyArgs) {
    drop(Box::from_raw((*args).error as *mut FakeError));
}

/// The execution context: what XLA_FFI_Stream_Get answers.
pub struct Ctx {
    pub stream: usize,
    pub stream_error: Option<&'static str>,
}

unsafe extern "C" fn stream_get(args: *mut xla::StreamGetArgs) -> *mut xla::Error {
    let args = &mut *args;
    assert_eq!(args.struct_size, xla::STREAM_GET_ARGS_STRUCT_SIZE);
    let ctx = &*(args.ctx as *const Ctx);
    match ctx.stream_error {
        Some(message) => {
            let error =
                FakeError { code: xla::ERROR_INTERNAL, message: CString::new(message).unwrap() };
            Box::into_raw(Box::new(error)) as *mut xla::Error
        }
        None => {
            args.stream = ctx.stream as *mut c_void;
            ptr::null_mut()
        }
    }
}

thread_local! {
    /// XLA_FFI_DeviceMemory_Allocate's (size, alignment, address) and
    /// XLA_FFI_DeviceMemory_Free's (size, address), in call order; allocations
    /// of more than FAKE_DEVICE_BYTES fail, and so do alignments over 16, as
    /// XLA's own allocator refuses them.
    pub static ALLOCATED: RefCell<Vec<(usize, usize, usize)>> = const { RefCell::new(Vec::new()) };
    pub static FREED: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}
pub const FAKE_DEVICE_BYTES: usize = 1 << 20;

unsafe extern "C" fn device_memory_allocate(
    args: *mut xla::DeviceMemoryAllocateArgs,
) -> *mut xla::Error {
    let args = &mut *args;
    assert_eq!(args.struct_size, xla::DEVICE_MEMORY_ALLOCATE_ARGS_STRUCT_SIZE);
    if args.size > FAKE_DEVICE_BYTES || !args.alignment.is_power_of_two() || args.alignment > 16 {
        let message = CString::new("out of device memory, or an unsupported alignment").unwrap();
        let error = FakeError { code: xla::ERROR_INTERNAL, message };
        return Box::into_raw(Box::new(error)) as *mut xla::Error;
    }
    let addr = ALLOCATED.with_borrow_mut(|a| {
        let addr = 0x7000_0000 + 0x10_0000 * a.len();
        a.push((args.size, args.alignment, addr));
        addr
    });
    args.data = addr as *mut c_void;
    ptr::null_mut()
}

unsafe extern "C" fn device_memory_free(args: *mut xla::DeviceMemoryFreeArgs) -> *mut xla::Error {
    let args = &*args;
    assert_eq!(args.struct_size, xla::DEVICE_MEMORY_FREE_ARGS_STRUCT_SIZE);
    FREED.with_borrow_mut(|f| f.push((args.size, args.data as usize)));
    ptr::null_mut()
}

pub fn fake_api() -> Api {
    Api {
        struct_size: size_of::<Api>(),
        extension_start: ptr::null_mut(),
        api_version: ApiVersion {
            struct_size: xla::API_VERSION_STRUCT_SIZE,
            extension_start: ptr::null_mut(),
            major_version: xla::API_MAJOR,
            minor_version: xla::API_MINOR,
        },
        internal_api: ptr::null(),
        error_create: Some(error_create),
        error_get_message: Some(error_get_message),
        error_destroy: Some(error_destroy),
        handler_register: ptr::null(),
        stream_get: Some(stream_get),
        type_register: ptr::null(),
        execution_context_get: ptr::null(),
        state_set: ptr::null(),
        state_get: ptr::null(),
        device_memory_allocate: Some(device_memory_allocate),
        device_memory_free: Some(device_memory_free),
    }
}

/// A buffer operand: dtype code, dims, and a made-up device address.
#[derive(Clone)]
pub struct Tensor {
    pub kind: c_int,
    pub dtype: xla::DataType,
    pub dims: Vec<i64>,
    pub addr: usize,
}

pub fn tensor(dtype: xla::DataType, dims: &[i64], addr: usize) -> Tensor {
    Tensor { kind: xla::ARG_BUFFER, dtype, dims: dims.to_vec(), addr }
}

/// A scalar attribute: name, attribute type, dtype and value bytes.
#[derive(Clone)]
pub struct Attr {
    pub name: String,
    pub kind: c_int,
    pub dtype: xla::DataType,
    pub value: [u8; 8],
}

pub fn attr(name: &str, dtype: xla::DataType, value: [u8; 8]) -> Attr {
    Attr { name: name.into(), kind: xla::ATTR_SCALAR, dtype, value }
}

fn bytes4(b: [u8; 4]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0]
}
pub fn f32_attr(name: &str, v: f32) -> Attr {
    attr(name, xla::F32, bytes4(v.to_ne_bytes()))
}
pub fn s32_attr(name: &str, v: i32) -> Attr {
    attr(name, xla::S32, bytes4(v.to_ne_bytes()))
}
pub fn pred_attr(name: &str, v: bool) -> Attr {
    attr(name, xla::PRED, [v as u8, 0, 0, 0, 0, 0, 0, 0])
}

/// The forward attributes the front end passes (has_alibi false), sorted by
/// name as XLA sorts them.
pub fn options(scale: f32, causal: bool, left: i32, right: i32, softcap: f32) -> Vec<Attr> {
    fwd_attrs(scale, causal, left, right, softcap, false)
}

pub fn fwd_attrs(
    scale: f32,
    causal: bool,
    left: i32,
    right: i32,
    softcap: f32,
    has_alibi: bool,
) -> Vec<Attr> {
    vec![
        pred_attr("has_alibi", has_alibi),
        pred_attr("is_causal", causal),
        f32_attr("softcap", softcap),
        f32_attr("softmax_scale", scale),
        s32_attr("window_left", left),
        s32_attr("window_right", right),
    ]
}

/// The backward's: the forward's and `deterministic`, which sorts first.
pub fn bwd_attrs(
    scale: f32,
    causal: bool,
    left: i32,
    right: i32,
    softcap: f32,
    has_alibi: bool,
    deterministic: bool,
) -> Vec<Attr> {
    let mut attrs = vec![pred_attr("deterministic", deterministic)];
    attrs.extend(fwd_attrs(scale, causal, left, right, softcap, has_alibi));
    attrs
}

/// `attrs` and a handler's own, kept sorted by name.
fn with_own(mut attrs: Vec<Attr>, own: [Attr; 2]) -> Vec<Attr> {
    attrs.extend(own);
    attrs.sort_by(|a, b| a.name.cmp(&b.name));
    attrs
}

/// The varlen calls': the dense ones' and the sequence length bounds.
pub fn varlen_attrs(attrs: Vec<Attr>, max_seqlen_q: i32, max_seqlen_k: i32) -> Vec<Attr> {
    with_own(
        attrs,
        [s32_attr("max_seqlen_q", max_seqlen_q), s32_attr("max_seqlen_k", max_seqlen_k)],
    )
}

/// The KV-cache call's: the forward's, has_block_table and num_splits.
pub fn kvcache_attrs(attrs: Vec<Attr>, has_block_table: bool, num_splits: i32) -> Vec<Attr> {
    with_own(
        attrs,
        [pred_attr("has_block_table", has_block_table), s32_attr("num_splits", num_splits)],
    )
}

/// Everything a call frame is built from.
#[derive(Clone)]
pub struct Spec {
    pub frame_size: usize,
    pub stage: xla::ExecutionStage,
    pub args: Vec<Tensor>,
    pub rets: Vec<Tensor>,
    pub attrs: Vec<Attr>,
    pub stream: usize,
    pub stream_error: Option<&'static str>,
}

pub const Q: usize = 0x1000;
pub const K: usize = 0x2000;
pub const V: usize = 0x3000;
pub const OUT: usize = 0x4000;
pub const LSE: usize = 0x5000;
pub const DOUT: usize = 0x6000;
pub const DQ: usize = 0x7000;
pub const DK: usize = 0x8000;
pub const DV: usize = 0x9000;
pub const DQ_ACCUM: usize = 0xa000;
pub const SOFTMAX_D: usize = 0xb000;
pub const ALIBI: usize = 0xd000;
pub const CU_SEQLENS_Q: usize = 0xe000;
pub const CU_SEQLENS_K: usize = 0xf000;
pub const SEQLENS_K: usize = 0x10000;
pub const BLOCK_TABLE: usize = 0x11000;
pub const WORKSPACE: usize = 0x12000;
pub const STREAM: usize = 0xcafe;

fn spec(args: Vec<Tensor>, rets: Vec<Tensor>) -> Spec {
    Spec {
        frame_size: xla::CALL_FRAME_STRUCT_SIZE,
        stage: xla::STAGE_EXECUTE,
        args,
        rets,
        attrs: options(0.125, true, -1, -1, 0.0),
        stream: STREAM,
        stream_error: None,
    }
}

/// A valid forward call: bf16, batch 2, seqlen 128 / 256, 4 / 2 heads, d=128.
pub fn fwd_spec() -> Spec {
    let (b, sq, sk, h, hk, d) = (2, 128, 256, 4, 2, 128);
    spec(
        vec![
            tensor(xla::BF16, &[b, sq, h, d], Q),
            tensor(xla::BF16, &[b, sk, hk, d], K),
            tensor(xla::BF16, &[b, sk, hk, d], V),
            tensor(xla::F32, &[b, h], ALIBI),
        ],
        vec![tensor(xla::BF16, &[b, sq, h, d], OUT), tensor(xla::F32, &[b, h, sq], LSE)],
    )
}

/// One split of the backward's dq_accum for bwd_spec's shape.
pub fn dq_accum_split() -> i64 {
    // Deterministic with no SM count: one split.
    let shape = AttentionShape {
        batch: 2,
        seqlen_q: 128,
        num_heads: 4,
        head_dim: 128,
        deterministic: 1,
        ..Default::default()
    };
    let (mut dq_accum, mut softmax_d) = (0, 0);
    unsafe { crate::kernels::jfa_bwd_workspace_elems(&shape, 0, &mut dq_accum, &mut softmax_d) };
    dq_accum
}

/// The matching valid backward call.
pub fn bwd_spec() -> Spec {
    let (b, sq, sk, h, hk, d) = (2, 128, 256, 4, 2, 128);
    let shape =
        AttentionShape { batch: b, seqlen_q: sq, num_heads: h, head_dim: d, ..Default::default() };
    let (mut dq_accum, mut softmax_d) = (0, 0);
    unsafe { crate::kernels::jfa_bwd_workspace_elems(&shape, 0, &mut dq_accum, &mut softmax_d) };
    let mut spec = spec(
        vec![
            tensor(xla::BF16, &[b, sq, h, d], DOUT),
            tensor(xla::BF16, &[b, sq, h, d], Q),
            tensor(xla::BF16, &[b, sk, hk, d], K),
            tensor(xla::BF16, &[b, sk, hk, d], V),
            tensor(xla::BF16, &[b, sq, h, d], OUT),
            tensor(xla::F32, &[b, h, sq], LSE),
            tensor(xla::F32, &[b, h], ALIBI),
        ],
        vec![
            tensor(xla::BF16, &[b, sq, h, d], DQ),
            tensor(xla::BF16, &[b, sk, h, d], DK),
            tensor(xla::BF16, &[b, sk, h, d], DV),
            tensor(xla::F32, &[dq_accum], DQ_ACCUM),
            tensor(xla::F32, &[softmax_d], SOFTMAX_D),
        ],
    );
    spec.attrs = bwd_attrs(0.125, true, -1, -1, 0.0, false, false);
    spec
}

/// varlen_fwd_spec's packing: sequences of 72 and 128 queries, 128 and 256
/// keys, so the bounds are those of fwd_spec's dense call.
pub const TOTAL_Q: i64 = 200;
pub const TOTAL_K: i64 = 384;
pub const MAX_SEQLEN_Q: i32 = 128;
pub const MAX_SEQLEN_K: i32 = 256;

/// A valid varlen forward call: bf16, 2 sequences, 4 / 2 heads, d=128.
pub fn varlen_fwd_spec() -> Spec {
    let (b, h, hk, d) = (2, 4, 2, 128);
    let mut spec = spec(
        vec![
            tensor(xla::BF16, &[TOTAL_Q, h, d], Q),
            tensor(xla::BF16, &[TOTAL_K, hk, d], K),
            tensor(xla::BF16, &[TOTAL_K, hk, d], V),
            tensor(xla::S32, &[b + 1], CU_SEQLENS_Q),
            tensor(xla::S32, &[b + 1], CU_SEQLENS_K),
            tensor(xla::F32, &[b, h], ALIBI),
        ],
        vec![tensor(xla::BF16, &[TOTAL_Q, h, d], OUT), tensor(xla::F32, &[h, TOTAL_Q], LSE)],
    );
    spec.attrs = varlen_attrs(spec.attrs, MAX_SEQLEN_Q, MAX_SEQLEN_K);
    spec
}

/// The varlen backward's (dq_accum split, softmax_d) for varlen_bwd_spec.
pub fn varlen_workspace() -> (i64, i64) {
    let shape = AttentionShape { batch: 2, num_heads: 4, head_dim: 128, ..Default::default() };
    let (mut dq_accum, mut softmax_d) = (0, 0);
    unsafe {
        crate::kernels::jfa_varlen_bwd_workspace_elems(
            &shape,
            TOTAL_Q,
            0,
            &mut dq_accum,
            &mut softmax_d,
        )
    };
    (dq_accum, softmax_d)
}

/// The matching valid varlen backward call.
pub fn varlen_bwd_spec() -> Spec {
    let (b, h, hk, d) = (2, 4, 2, 128);
    let (dq_accum, softmax_d) = varlen_workspace();
    let mut spec = spec(
        vec![
            tensor(xla::BF16, &[TOTAL_Q, h, d], DOUT),
            tensor(xla::BF16, &[TOTAL_Q, h, d], Q),
            tensor(xla::BF16, &[TOTAL_K, hk, d], K),
            tensor(xla::BF16, &[TOTAL_K, hk, d], V),
            tensor(xla::BF16, &[TOTAL_Q, h, d], OUT),
            tensor(xla::F32, &[h, TOTAL_Q], LSE),
            tensor(xla::S32, &[b + 1], CU_SEQLENS_Q),
            tensor(xla::S32, &[b + 1], CU_SEQLENS_K),
            tensor(xla::F32, &[b, h], ALIBI),
        ],
        vec![
            tensor(xla::BF16, &[TOTAL_Q, h, d], DQ),
            tensor(xla::BF16, &[TOTAL_K, h, d], DK),
            tensor(xla::BF16, &[TOTAL_K, h, d], DV),
            tensor(xla::F32, &[dq_accum], DQ_ACCUM),
            tensor(xla::F32, &[softmax_d], SOFTMAX_D),
        ],
    );
    spec.attrs =
        varlen_attrs(bwd_attrs(0.125, true, -1, -1, 0.0, false, false), MAX_SEQLEN_Q, MAX_SEQLEN_K);
    spec
}

/// kvcache_fwd_spec's splits, and the workspace they need for its shape.
pub const NUM_SPLITS: i32 = 4;

pub fn kvcache_workspace(shape: &AttentionShape, num_splits: i32) -> i64 {
    unsafe { crate::kernels::jfa_kvcache_workspace_elems(shape, num_splits) }
}

/// A valid KV-cache forward call against a contiguous cache, fwd_spec's shape
/// with a capacity of 256 keys; block_table the front end's [batch, 1]
/// placeholder.
pub fn kvcache_fwd_spec() -> Spec {
    let (b, sq, sk, h, hk, d) = (2, 128, 256, 4, 2, 128);
    let shape =
        AttentionShape { batch: b, seqlen_q: sq, num_heads: h, head_dim: d, ..Default::default() };
    let mut spec = spec(
        vec![
            tensor(xla::BF16, &[b, sq, h, d], Q),
            tensor(xla::BF16, &[b, sk, hk, d], K),
            tensor(xla::BF16, &[b, sk, hk, d], V),
            tensor(xla::S32, &[b], SEQLENS_K),
            tensor(xla::S32, &[b, 1], BLOCK_TABLE),
            tensor(xla::F32, &[b, h], ALIBI),
        ],
        vec![
            tensor(xla::BF16, &[b, sq, h, d], OUT),
            tensor(xla::F32, &[b, h, sq], LSE),
            tensor(xla::F32, &[kvcache_workspace(&shape, NUM_SPLITS)], WORKSPACE),
        ],
    );
    spec.attrs = kvcache_attrs(spec.attrs, false, NUM_SPLITS);
    spec
}

/// paged_kvcache_fwd_spec's pages: 3 of 256 keys, 2 per entry.
pub const PAGES: i64 = 3;
pub const PAGE_BLOCK_SIZE: i64 = 256;
pub const MAX_BLOCKS_PER_SEQ: i64 = 2;

/// The same call against a paged cache (capacity 512 keys).
pub fn paged_kvcache_fwd_spec() -> Spec {
    let mut spec = kvcache_fwd_spec();
    for cache in &mut spec.args[1..3] {
        cache.dims = vec![PAGES, PAGE_BLOCK_SIZE, 2, 128];
    }
    spec.args[4].dims = vec![2, MAX_BLOCKS_PER_SEQ];
    spec.attrs = kvcache_attrs(options(0.125, true, -1, -1, 0.0), true, NUM_SPLITS);
    spec
}

/// A call frame and the storage it points into (heap data does not move).
pub struct Call {
    pub frame: CallFrame,
    _api: Box<Api>,
    _ctx: Box<Ctx>,
    _dims: Vec<Vec<i64>>,
    _buffers: Vec<Box<xla::Buffer>>,
    _types: Vec<Vec<c_int>>,
    _ptrs: Vec<Vec<*mut c_void>>,
    _names: Vec<(String, Box<xla::ByteSpan>)>,
    _name_ptrs: Vec<*mut xla::ByteSpan>,
    _values: Vec<Box<[u8; 8]>>,
    _scalars: Vec<Box<xla::Scalar>>,
}

pub fn build(spec: &Spec) -> Call {
    build_with_api(spec, fake_api())
}

pub fn build_with_api(spec: &Spec, api: Api) -> Call {
    let api = Box::new(api);
    let ctx = Box::new(Ctx { stream: spec.stream, stream_error: spec.stream_error });
    let mut dims = Vec::new();
    let mut buffers = Vec::new();
    let mut types = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut ptrs: Vec<Vec<*mut c_void>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for (slot, tensors) in [&spec.args, &spec.rets].into_iter().enumerate() {
        for t in tensors {
            let mut d = t.dims.clone();
            let buffer = Box::new(xla::Buffer {
                struct_size: xla::BUFFER_STRUCT_SIZE,
                extension_start: ptr::null_mut(),
                dtype: t.dtype,
                data: t.addr as *mut c_void,
                rank: d.len() as i64,
                dims: d.as_mut_ptr(),
            });
            dims.push(d);
            types[slot].push(t.kind);
            ptrs[slot].push(&*buffer as *const xla::Buffer as *mut c_void);
            buffers.push(buffer);
        }
    }
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut scalars = Vec::new();
    for a in &spec.attrs {
        let name = a.name.clone();
        let span = Box::new(xla::ByteSpan { ptr: name.as_ptr() as *const _, len: name.len() });
        names.push((name, span));
        let mut value = Box::new(a.value);
        let scalar =
            Box::new(xla::Scalar { dtype: a.dtype, value: value.as_mut_ptr() as *mut c_void });
        values.push(value);
        types[2].push(a.kind);
        ptrs[2].push(&*scalar as *const xla::Scalar as *mut c_void);
        scalars.push(scalar);
    }
    let mut name_ptrs: Vec<*mut xla::ByteSpan> =
        names.iter().map(|(_, s)| &**s as *const xla::ByteSpan as *mut xla::ByteSpan).collect();
    let frame = CallFrame {
        struct_size: spec.frame_size,
        extension_start: ptr::null_mut(),
        api: &*api,
        ctx: &*ctx as *const Ctx as *mut xla::ExecutionContext,
        stage: spec.stage,
        args: xla::Args {
            struct_size: size_of::<xla::Args>(),
            extension_start: ptr::null_mut(),
            size: spec.args.len() as i64,
            types: types[0].as_mut_ptr(),
            args: ptrs[0].as_mut_ptr(),
        },
        rets: xla::Rets {
            struct_size: size_of::<xla::Rets>(),
            extension_start: ptr::null_mut(),
            size: spec.rets.len() as i64,
            types: types[1].as_mut_ptr(),
            rets: ptrs[1].as_mut_ptr(),
        },
        attrs: xla::Attrs {
            struct_size: size_of::<xla::Attrs>(),
            extension_start: ptr::null_mut(),
            size: spec.attrs.len() as i64,
            types: types[2].as_mut_ptr(),
            names: name_ptrs.as_mut_ptr(),
            attrs: ptrs[2].as_mut_ptr(),
        },
        future: ptr::null_mut(),
    };
    Call {
        frame,
        _api: api,
        _ctx: ctx,
        _dims: dims,
        _buffers: buffers,
        _types: types,
        _ptrs: ptrs,
        _names: names,
        _name_ptrs: name_ptrs,
        _values: values,
        _scalars: scalars,
    }
}

/// A handler's answer: None for success, else the error's (code, message).
pub fn outcome(error: *mut xla::Error) -> Option<(c_int, String)> {
    if error.is_null() {
        return None;
    }
    let error = unsafe { Box::from_raw(error as *mut FakeError) };
    Some((error.code, error.message.into_string().unwrap()))
}

/// A handler's entry point, over the recording kernel library.
pub type Entry = unsafe fn(&Recorder, *mut CallFrame) -> *mut xla::Error;

/// Builds the call and runs the handler on it.
pub fn run(handler: Entry, lib: &Recorder, spec: &Spec) -> Option<(c_int, String)> {
    let mut call = build(spec);
    outcome(unsafe { handler(lib, &mut call.frame) })
}

/// One recorded kernel launch. `alibi` is (slopes pointer, batch stride);
/// `dq_accum_elems` is the backward's (0 for the forward); `varlen` and
/// `kvcache` what the varlen and KV-cache calls add.
#[derive(Debug, PartialEq)]
pub struct Launch {
    pub shape: AttentionShape,
    pub pointers: Vec<usize>,
    pub stream: usize,
    pub alibi: (usize, i64),
    pub dq_accum_elems: i64,
    pub varlen: Option<Packed>,
    pub kvcache: Option<Cache>,
    /// The dense forward's or backward's scratch: address and bytes.
    pub workspace: (usize, i64),
}

/// A varlen launch's cu_seqlens_q / cu_seqlens_k pointers and token counts.
#[derive(Debug, PartialEq)]
pub struct Packed {
    pub cu_seqlens: (usize, usize),
    pub totals: (i64, i64),
}

/// A KV-cache launch's seqlens_k and block_table pointers, its pages
/// (max_blocks_per_seq, page_block_size), num_splits and workspace (pointer,
/// elements).
#[derive(Debug, PartialEq)]
pub struct Cache {
    pub seqlens_k: usize,
    pub block_table: usize,
    pub pages: (i64, i64),
    pub num_splits: i32,
    pub workspace: (usize, i64),
}

/// A buffer as the handler described it to the C ABI: (dtype code, dims).
pub type Described = (c_int, Vec<i64>);

/// Validates with the real C ABI; records launches and the buffers last
/// described to it; fails launches on request.
#[derive(Default)]
pub struct Recorder {
    pub launches: RefCell<Vec<Launch>>,
    pub described: RefCell<Vec<Described>>,
    pub launch_failure: Option<(c_int, &'static str)>,
    pub panic_on_launch: bool,
    /// What fwd_workspace_bytes and bwd_workspace_bytes answer.
    pub fwd_workspace: i64,
    pub bwd_workspace: i64,
}

fn fwd_launch(a: &FwdArgs, stream: *mut c_void) -> Launch {
    let pointers =
        vec![a.q as usize, a.k as usize, a.v as usize, a.out as usize, a.softmax_lse as usize];
    Launch {
        shape: a.shape,
        pointers,
        stream: stream as usize,
        alibi: (a.alibi_slopes as usize, a.alibi_slopes_batch_stride),
        dq_accum_elems: 0,
        varlen: None,
        kvcache: None,
        workspace: (a.workspace as usize, a.workspace_bytes),
    }
}

fn bwd_launch(a: &BwdArgs, stream: *mut c_void) -> Launch {
    let pointers = [
        a.dout as usize,
        a.q as usize,
        a.k as usize,
        a.v as usize,
        a.out as usize,
        a.softmax_lse as usize,
        a.dq as usize,
        a.dk as usize,
        a.dv as usize,
        a.dq_accum as usize,
        a.softmax_d as usize,
    ];
    Launch {
        shape: a.shape,
        pointers: pointers.to_vec(),
        stream: stream as usize,
        alibi: (a.alibi_slopes as usize, a.alibi_slopes_batch_stride),
        dq_accum_elems: a.dq_accum_elems,
        varlen: None,
        kvcache: None,
        workspace: (a.workspace as usize, a.workspace_bytes),
    }
}

fn packed(cu_seqlens_q: *const i32, cu_seqlens_k: *const i32, totals: (i64, i64)) -> Packed {
    Packed { cu_seqlens: (cu_seqlens_q as usize, cu_seqlens_k as usize), totals }
}

impl Recorder {
    fn describe(&self, buffers: &[JfaBuffer]) {
        // SAFETY: the handler's descriptions of XLA's buffers, `rank` dims each.
        let dims = |b: &JfaBuffer| unsafe { std::slice::from_raw_parts(b.dims, b.rank as usize) };
        *self.described.borrow_mut() =
            buffers.iter().map(|b| (b.xla_dtype, dims(b).to_vec())).collect();
    }

    fn launch(&self, launch: Launch) -> Result<(), Failure> {
        if self.panic_on_launch {
            panic!("launch exploded");
        }
        self.launches.borrow_mut().push(launch);
        match self.launch_failure {
            Some((status, message)) => Err(Failure { status, message: message.into() }),
            None => Ok(()),
        }
    }
}

impl KernelLib for Recorder {
    fn fwd_shape(&self, buffers: &[JfaBuffer], shape: &mut AttentionShape) -> Result<(), Failure> {
        self.describe(buffers);
        CAbi.fwd_shape(buffers, shape)
    }

    fn bwd_shape(&self, buffers: &[JfaBuffer], shape: &mut AttentionShape) -> Result<(), Failure> {
        self.describe(buffers);
        CAbi.bwd_shape(buffers, shape)
    }

    fn varlen_fwd_shape(
        &self,
        buffers: &[JfaBuffer],
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure> {
        self.describe(buffers);
        CAbi.varlen_fwd_shape(buffers, shape)
    }

    fn varlen_bwd_shape(
        &self,
        buffers: &[JfaBuffer],
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure> {
        self.describe(buffers);
        CAbi.varlen_bwd_shape(buffers, shape)
    }

    fn kvcache_fwd_shape(
        &self,
        buffers: &[JfaBuffer],
        paged: bool,
        shape: &mut AttentionShape,
    ) -> Result<(i64, i64), Failure> {
        self.describe(buffers);
        CAbi.kvcache_fwd_shape(buffers, paged, shape)
    }

    unsafe fn mha_fwd(&self, a: &FwdArgs, stream: *mut c_void) -> Result<(), Failure> {
        self.launch(fwd_launch(a, stream))
    }

    fn fwd_workspace_bytes(&self, _shape: &AttentionShape, _has_alibi: bool) -> i64 {
        self.fwd_workspace
    }

    unsafe fn mha_bwd(&self, a: &BwdArgs, stream: *mut c_void) -> Result<(), Failure> {
        self.launch(bwd_launch(a, stream))
    }

    fn bwd_workspace_bytes(&self, _shape: &AttentionShape, _has_alibi: bool) -> i64 {
        self.bwd_workspace
    }

    unsafe fn mha_varlen_fwd(&self, a: &VarlenFwdArgs, stream: *mut c_void) -> Result<(), Failure> {
        let varlen = packed(a.cu_seqlens_q, a.cu_seqlens_k, (a.total_q, a.total_k));
        self.launch(Launch { varlen: Some(varlen), ..fwd_launch(&a.base, stream) })
    }

    unsafe fn mha_varlen_bwd(&self, a: &VarlenBwdArgs, stream: *mut c_void) -> Result<(), Failure> {
        let varlen = packed(a.cu_seqlens_q, a.cu_seqlens_k, (a.total_q, a.total_k));
        self.launch(Launch { varlen: Some(varlen), ..bwd_launch(&a.base, stream) })
    }

    unsafe fn mha_kvcache_fwd(
        &self,
        a: &KvcacheFwdArgs,
        stream: *mut c_void,
    ) -> Result<(), Failure> {
        let cache = Cache {
            seqlens_k: a.seqlens_k as usize,
            block_table: a.block_table as usize,
            pages: (a.max_blocks_per_seq, a.page_block_size),
            num_splits: a.num_splits,
            workspace: (a.workspace as usize, a.workspace_elems),
        };
        self.launch(Launch { kvcache: Some(cache), ..fwd_launch(&a.base, stream) })
    }
}
