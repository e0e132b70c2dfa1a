//! The parts of XLA's FFI C API (`xla/ffi/api/c_api.h`, API version 0.3) that
//! the handlers use, as `#[repr(C)]` types.
//!
//! Enums are plain integers here: a C enum is an `int`, and XLA may hand us a
//! value this file does not know. `tests/abi_layout.cc` checks every size,
//! offset and constant below against the header.

// The header is mirrored whole; not every item is used outside the tests.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_void};
use std::mem::{offset_of, size_of};

/// The API version of the header these types mirror.
pub const API_MAJOR: c_int = 0;
pub const API_MINOR: c_int = 3;

// XLA_FFI_Error_Code
pub type ErrorCode = c_int;
pub const ERROR_INVALID_ARGUMENT: ErrorCode = 3;
pub const ERROR_UNIMPLEMENTED: ErrorCode = 12;
pub const ERROR_INTERNAL: ErrorCode = 13;

// XLA_FFI_DataType (the codes the handlers decode or print).
pub type DataType = c_int;
pub const PRED: DataType = 1;
pub const S32: DataType = 4;
pub const F16: DataType = 10;
pub const F32: DataType = 11;
pub const BF16: DataType = 16;

/// The name XLA's own handlers print for a data type (c_api.h's list).
pub fn data_type_name(dtype: DataType) -> String {
    #[rustfmt::skip]
    const NAMES: [(DataType, &str); 32] = [
        (0, "INVALID"), (1, "PRED"), (30, "S1"), (26, "S2"), (21, "S4"), (2, "S8"),
        (3, "S16"), (4, "S32"), (5, "S64"), (31, "U1"), (27, "U2"), (22, "U4"),
        (6, "U8"), (7, "U16"), (8, "U32"), (9, "U64"), (10, "F16"), (11, "F32"),
        (12, "F64"), (16, "BF16"), (15, "C64"), (18, "C128"), (17, "TOKEN"),
        (19, "F8E5M2"), (29, "F8E3M4"), (28, "F8E4M3"), (20, "F8E4M3FN"),
        (23, "F8E4M3B11FNUZ"), (24, "F8E5M2FNUZ"), (25, "F8E4M3FNUZ"),
        (32, "F4E2M1FN"), (33, "F8E8M0FNU"),
    ];
    match NAMES.iter().find(|(code, _)| *code == dtype) {
        Some((_, name)) => name.to_string(),
        None => dtype.to_string(),
    }
}

// XLA_FFI_ExecutionStage
pub type ExecutionStage = c_int;
pub const STAGE_EXECUTE: ExecutionStage = 3;

pub fn stage_name(stage: ExecutionStage) -> String {
    match stage {
        0 => "instantiate".into(),
        1 => "prepare".into(),
        2 => "initialize".into(),
        3 => "execute".into(),
        other => other.to_string(),
    }
}

// XLA_FFI_ArgType, XLA_FFI_RetType: BUFFER is their only value.
pub const ARG_BUFFER: c_int = 1;
pub const RET_BUFFER: c_int = 1;

// XLA_FFI_AttrType
pub const ATTR_SCALAR: c_int = 3;

pub fn attr_type_name(attr_type: c_int) -> String {
    match attr_type {
        1 => "array".into(),
        2 => "dictionary".into(),
        3 => "scalar".into(),
        4 => "string".into(),
        other => other.to_string(),
    }
}

// XLA_FFI_Extension_Type
pub const EXTENSION_METADATA: c_int = 1;

/// Opaque XLA objects.
#[repr(C)]
pub struct Error {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct ExecutionContext {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct ExtensionBase {
    pub struct_size: usize,
    pub type_: c_int,
    pub next: *mut ExtensionBase,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ApiVersion {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub major_version: c_int,
    pub minor_version: c_int,
}

#[repr(C)]
pub struct ErrorCreateArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub message: *const c_char,
    pub errc: ErrorCode,
}

#[repr(C)]
pub struct ErrorGetMessageArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub error: *mut Error,
    pub message: *const c_char,
}

#[repr(C)]
pub struct ErrorDestroyArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub error: *mut Error,
}

#[repr(C)]
pub struct Buffer {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub dtype: DataType,
    pub data: *mut c_void,
    pub rank: i64,
    pub dims: *mut i64,
}

#[repr(C)]
pub struct ByteSpan {
    pub ptr: *const c_char,
    pub len: usize,
}

#[repr(C)]
pub struct Scalar {
    pub dtype: DataType,
    pub value: *mut c_void,
}

#[repr(C)]
pub struct Args {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub size: i64,
    pub types: *mut c_int,
    pub args: *mut *mut c_void,
}

#[repr(C)]
pub struct Rets {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub size: i64,
    pub types: *mut c_int,
    pub rets: *mut *mut c_void,
}

/// Attributes, sorted by name.
#[repr(C)]
pub struct Attrs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub size: i64,
    pub types: *mut c_int,
    pub names: *mut *mut ByteSpan,
    pub attrs: *mut *mut c_void,
}

#[repr(C)]
pub struct CallFrame {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub api: *const Api,
    pub ctx: *mut ExecutionContext,
    pub stage: ExecutionStage,
    pub args: Args,
    pub rets: Rets,
    pub attrs: Attrs,
    pub future: *mut c_void,
}

#[repr(C)]
pub struct StreamGetArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub ctx: *mut ExecutionContext,
    pub stream: *mut c_void,
}

#[repr(C)]
pub struct Metadata {
    pub struct_size: usize,
    pub api_version: ApiVersion,
    pub traits: u32,
    pub state_type_id: i64,
}

#[repr(C)]
pub struct MetadataExtension {
    pub extension_base: ExtensionBase,
    pub metadata: *mut Metadata,
}

pub type ErrorCreateFn = unsafe extern "C" fn(*mut ErrorCreateArgs) -> *mut Error;
pub type ErrorGetMessageFn = unsafe extern "C" fn(*mut ErrorGetMessageArgs);
pub type ErrorDestroyFn = unsafe extern "C" fn(*mut ErrorDestroyArgs);
pub type StreamGetFn = unsafe extern "C" fn(*mut StreamGetArgs) -> *mut Error;
pub type DeviceMemoryAllocateFn = unsafe extern "C" fn(*mut DeviceMemoryAllocateArgs) -> *mut Error;
pub type DeviceMemoryFreeFn = unsafe extern "C" fn(*mut DeviceMemoryFreeArgs) -> *mut Error;

#[repr(C)]
pub struct DeviceMemoryAllocateArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub ctx: *mut ExecutionContext,
    pub size: usize,
    pub alignment: usize,
    pub data: *mut c_void,
}

#[repr(C)]
pub struct DeviceMemoryFreeArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub ctx: *mut ExecutionContext,
    pub size: usize,
    pub data: *mut c_void,
}

/// The leading part of XLA_FFI_Api, up to the last function the handlers
/// call; `struct_size` says how much of it the runtime provides.
#[repr(C)]
pub struct Api {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub api_version: ApiVersion,
    pub internal_api: *const c_void,
    pub error_create: Option<ErrorCreateFn>,
    pub error_get_message: Option<ErrorGetMessageFn>,
    pub error_destroy: Option<ErrorDestroyFn>,
    pub handler_register: *const c_void,
    pub stream_get: Option<StreamGetFn>,
    pub type_register: *const c_void,
    pub execution_context_get: *const c_void,
    pub state_set: *const c_void,
    pub state_get: *const c_void,
    pub device_memory_allocate: Option<DeviceMemoryAllocateFn>,
    pub device_memory_free: Option<DeviceMemoryFreeFn>,
}

/// The handler signature, `XLA_FFI_Handler`.
pub type Handler = unsafe extern "C" fn(*mut CallFrame) -> *mut Error;

/// XLA_FFI_STRUCT_SIZE: the offset of the last field plus its size.
macro_rules! struct_size {
    ($t:ty, $last:ident, $last_ty:ty) => {
        offset_of!($t, $last) + size_of::<$last_ty>()
    };
}

pub const API_VERSION_STRUCT_SIZE: usize = struct_size!(ApiVersion, minor_version, c_int);
pub const ERROR_CREATE_ARGS_STRUCT_SIZE: usize = struct_size!(ErrorCreateArgs, errc, ErrorCode);
pub const ERROR_GET_MESSAGE_ARGS_STRUCT_SIZE: usize =
    struct_size!(ErrorGetMessageArgs, message, *const c_char);
pub const ERROR_DESTROY_ARGS_STRUCT_SIZE: usize = struct_size!(ErrorDestroyArgs, error, *mut Error);
pub const BUFFER_STRUCT_SIZE: usize = struct_size!(Buffer, dims, *mut i64);
pub const CALL_FRAME_STRUCT_SIZE: usize = struct_size!(CallFrame, attrs, Attrs);
pub const STREAM_GET_ARGS_STRUCT_SIZE: usize = struct_size!(StreamGetArgs, stream, *mut c_void);
pub const DEVICE_MEMORY_ALLOCATE_ARGS_STRUCT_SIZE: usize =
    struct_size!(DeviceMemoryAllocateArgs, data, *mut c_void);
pub const DEVICE_MEMORY_FREE_ARGS_STRUCT_SIZE: usize =
    struct_size!(DeviceMemoryFreeArgs, data, *mut c_void);
pub const METADATA_STRUCT_SIZE: usize = struct_size!(Metadata, traits, u32);
pub const METADATA_EXTENSION_STRUCT_SIZE: usize =
    struct_size!(MetadataExtension, metadata, *mut Metadata);

/// How much of XLA_FFI_Api the runtime must provide for `field` to be there.
macro_rules! api_needs {
    ($field:ident) => {
        ::std::mem::offset_of!($crate::xla_ffi::Api, $field)
            + ::std::mem::size_of::<*const ::std::ffi::c_void>()
    };
}
pub(crate) use api_needs;
