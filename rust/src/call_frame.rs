//! Decoding an XLA FFI call frame, the way XLA's C++ `xla::ffi::Ffi::Bind()`
//! handlers do (xla/ffi/api/api.h), with the same checks in the same order
//! and the same error messages, so that both bindings fail alike:
//!
//!  1. the call frame's struct size;
//!  2. XLA's metadata query: a call frame with a metadata extension, in
//!     which XLA asks a handler for its API version and traits;
//!  3. the execution stage, then the numbers of args, rets and attrs;
//!  4. the operands in binding order: the stream (context), args, rets,
//!     attrs; every one that fails adds its index and a diagnostic to one
//!     "Failed to decode all FFI handler operands" error.
//!
//! Beyond the C++ binding it also checks the runtime's API version and that
//! its function table and buffer structs are as large as this file reads.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::{ptr, slice};

use crate::xla_ffi::{self as xla, api_needs, Api, Buffer, CallFrame, DataType, ErrorCode};

/// What a handler binds: an execution-stage handler with a platform stream,
/// `args` buffer arguments, `rets` buffer results and scalar attributes.
pub struct Signature {
    pub args: usize,
    pub rets: usize,
    /// (name, dtype) in binding order.
    pub attrs: &'static [(&'static str, DataType)],
}

/// A scalar attribute's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Pred(bool),
    S32(i32),
    F32(f32),
}

/// The decoded operands of one call.
pub struct Operands<'a> {
    pub stream: *mut c_void,
    pub args: Vec<&'a Buffer>,
    pub rets: Vec<&'a Buffer>,
    /// In the signature's order.
    pub attrs: Vec<Scalar>,
    pub scratch: Scratch<'a>,
}

/// Device memory from XLA for one call, as the C++ binding's
/// `ffi::ScratchAllocator`: what `allocate` gives is freed when the operands
/// go, after the handler has enqueued its kernels (XLA's later work on the
/// stream runs after them).
pub struct Scratch<'a> {
    api: &'a Api,
    ctx: *mut xla::ExecutionContext,
    allocations: RefCell<Vec<(usize, *mut c_void)>>,
}

impl Scratch<'_> {
    /// `size` bytes, or why XLA cannot give them (a runtime without the
    /// functions, no memory left, an alignment it refuses).
    pub fn allocate(&self, size: usize, alignment: usize) -> Result<*mut c_void, String> {
        let no_allocator = || "this XLA runtime has no device memory allocation".to_string();
        if self.api.struct_size < api_needs!(device_memory_free) {
            return Err(no_allocator());
        }
        let allocate = self.api.device_memory_allocate.ok_or_else(no_allocator)?;
        let mut args = xla::DeviceMemoryAllocateArgs {
            struct_size: xla::DEVICE_MEMORY_ALLOCATE_ARGS_STRUCT_SIZE,
            extension_start: ptr::null_mut(),
            ctx: self.ctx,
            size,
            alignment,
            data: ptr::null_mut(),
        };
        // SAFETY: the runtime's own function, with this call's context.
        let error = unsafe { allocate(&mut args) };
        if !error.is_null() {
            // SAFETY: an error the runtime just returned, ours to destroy.
            return Err(unsafe { take_error_message(self.api, error) });
        }
        self.allocations.borrow_mut().push((size, args.data));
        Ok(args.data)
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        // Present wherever an allocation was made (allocate checks both).
        let Some(free) = self.api.device_memory_free else { return };
        for (size, data) in self.allocations.take() {
            let mut args = xla::DeviceMemoryFreeArgs {
                struct_size: xla::DEVICE_MEMORY_FREE_ARGS_STRUCT_SIZE,
                extension_start: ptr::null_mut(),
                ctx: self.ctx,
                size,
                data,
            };
            // SAFETY: memory this call allocated, with its context.
            let error = unsafe { free(&mut args) };
            if !error.is_null() {
                // SAFETY: as in allocate.
                unsafe { take_error_message(self.api, error) };
            }
        }
    }
}

/// An error for XLA: an XLA_FFI_Error_Code and a message.
#[derive(Debug, PartialEq)]
pub struct FfiError {
    pub code: ErrorCode,
    pub message: String,
}

impl FfiError {
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        FfiError { code: xla::ERROR_INVALID_ARGUMENT, message: message.into() }
    }
}

/// Runs one handler call: decodes `frame` per `sig`, calls `body` with the
/// operands, and turns the outcome into what XLA expects (NULL on success).
///
/// # Safety
/// `frame` is a call frame from XLA (or laid out like one).
pub unsafe fn handle(
    frame: *mut CallFrame,
    sig: &Signature,
    body: impl FnOnce(&Operands) -> Result<(), FfiError>,
) -> *mut xla::Error {
    if frame.is_null() {
        eprintln!("jflash_attn_rust: FFI handler called without a call frame");
        std::process::abort();
    }
    let frame = &*frame;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if let Some(err) = check_frame(frame) {
            return Err(err);
        }
        if is_metadata_query(frame) {
            return populate_metadata(frame.extension_start as *mut xla::MetadataExtension);
        }
        let ops = decode(frame, sig)?;
        body(&ops)
    }));
    let err = match outcome {
        Ok(Ok(())) => return ptr::null_mut(),
        Ok(Err(err)) => err,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            FfiError {
                code: xla::ERROR_INTERNAL,
                message: format!("jflash_attn_rust: panic in FFI handler: {what}"),
            }
        }
    };
    match create_error(frame.api, &err) {
        Some(error) => error,
        // Some XLA versions send the metadata query without an API. Without
        // one there is no error to return: leaving the metadata unset makes
        // XLA refuse the handler for its (zero) API version instead.
        None if is_metadata_query(frame) => {
            eprintln!("jflash_attn_rust: XLA FFI metadata query failed: {}", err.message);
            ptr::null_mut()
        }
        None => {
            eprintln!("jflash_attn_rust: cannot report an XLA FFI error: {}", err.message);
            std::process::abort();
        }
    }
}

fn check_frame(frame: &CallFrame) -> Option<FfiError> {
    if frame.struct_size != xla::CALL_FRAME_STRUCT_SIZE {
        return Some(FfiError::invalid_argument(format!(
            "Unexpected XLA_FFI_CallFrame size: expected {} got {}. Check installed software versions.",
            xla::CALL_FRAME_STRUCT_SIZE,
            frame.struct_size
        )));
    }
    None
}

unsafe fn is_metadata_query(frame: &CallFrame) -> bool {
    !frame.extension_start.is_null() && (*frame.extension_start).type_ == xla::EXTENSION_METADATA
}

fn too_small(what: &str, expected: usize, actual: usize) -> FfiError {
    FfiError::invalid_argument(format!(
        "Unexpected {what} size: expected at least {expected} got {actual}. Check installed software versions."
    ))
}

/// Tells XLA which API version the handler was written against (that of
/// the mirrored header) and that it has no traits and no state.
unsafe fn populate_metadata(ext: *mut xla::MetadataExtension) -> Result<(), FfiError> {
    let ext = &mut *ext;
    if ext.extension_base.struct_size < xla::METADATA_EXTENSION_STRUCT_SIZE {
        return Err(too_small(
            "XLA_FFI_Metadata_Extension",
            xla::METADATA_EXTENSION_STRUCT_SIZE,
            ext.extension_base.struct_size,
        ));
    }
    let metadata = &mut *ext.metadata;
    if metadata.struct_size < xla::METADATA_STRUCT_SIZE {
        return Err(too_small("XLA_FFI_Metadata", xla::METADATA_STRUCT_SIZE, metadata.struct_size));
    }
    metadata.api_version = xla::ApiVersion {
        struct_size: xla::API_VERSION_STRUCT_SIZE,
        extension_start: ptr::null_mut(),
        major_version: xla::API_MAJOR,
        minor_version: xla::API_MINOR,
    };
    metadata.traits = 0;
    // Past the declared struct size in 0.3's header, but written by XLA's
    // own handlers; only when the caller's struct has room for it.
    let end = std::mem::offset_of!(xla::Metadata, state_type_id) + std::mem::size_of::<i64>();
    if metadata.struct_size >= end {
        metadata.state_type_id = 0;
    }
    Ok(())
}

/// The runtime's function table must be of our major version and hold the
/// functions we call.
unsafe fn check_api(api: &Api) -> Result<(), FfiError> {
    let version = api.api_version;
    if version.major_version != xla::API_MAJOR {
        return Err(FfiError::invalid_argument(format!(
            "XLA FFI API version {}.{} is not supported by this handler (built for {}.{})",
            version.major_version,
            version.minor_version,
            xla::API_MAJOR,
            xla::API_MINOR
        )));
    }
    if api.struct_size < api_needs!(stream_get) {
        return Err(too_small("XLA_FFI_Api", api_needs!(stream_get), api.struct_size));
    }
    Ok(())
}

fn wrong_count(frame: &CallFrame, what: &str, expected: usize, got: i64) -> FfiError {
    FfiError::invalid_argument(format!(
        "[{}] Wrong number of {what}: expected {expected} but got {got}",
        xla::stage_name(frame.stage)
    ))
}

unsafe fn span_str(span: *const xla::ByteSpan) -> String {
    let span = &*span;
    if span.ptr.is_null() {
        return String::new();
    }
    String::from_utf8_lossy(slice::from_raw_parts(span.ptr as *const u8, span.len)).into_owned()
}

unsafe fn decode<'a>(frame: &'a CallFrame, sig: &Signature) -> Result<Operands<'a>, FfiError> {
    let api = frame.api.as_ref().ok_or_else(|| FfiError::invalid_argument("no XLA FFI API"))?;
    check_api(api)?;
    if frame.stage != xla::STAGE_EXECUTE {
        return Err(FfiError::invalid_argument(format!(
            "Wrong execution stage: expected `{}` but got `{}`",
            xla::stage_name(xla::STAGE_EXECUTE),
            xla::stage_name(frame.stage)
        )));
    }
    if frame.args.size != sig.args as i64 {
        return Err(wrong_count(frame, "arguments", sig.args, frame.args.size));
    }
    if frame.rets.size != sig.rets as i64 {
        return Err(wrong_count(frame, "results", sig.rets, frame.rets.size));
    }
    let attrs = &frame.attrs;
    if attrs.size != sig.attrs.len() as i64 {
        let mut message = format!(
            "[{}] Wrong number of attributes: expected {} but got {}",
            xla::stage_name(frame.stage),
            sig.attrs.len(),
            attrs.size
        );
        if attrs.size > 0 {
            let names = slice::from_raw_parts(attrs.names, attrs.size as usize);
            let names: Vec<String> = names.iter().map(|&n| span_str(n)).collect();
            message += &format!(" with name(s): {}", names.join(", "));
        }
        return Err(FfiError::invalid_argument(message));
    }

    // Operands in binding order; a failure records its index and diagnostic.
    let mut bad = Vec::new();
    let mut diagnostics = String::new();
    let mut index = 0;
    let mut check = |result: Result<(), String>| {
        if let Err(diagnostic) = result {
            bad.push(index.to_string());
            diagnostics += &diagnostic;
        }
        index += 1;
    };

    let mut stream = ptr::null_mut();
    check(get_stream(api, frame.ctx).map(|s| stream = s));
    let mut args = Vec::with_capacity(sig.args);
    for i in 0..sig.args {
        let kind = *frame.args.types.add(i);
        let arg = *frame.args.args.add(i) as *const Buffer;
        check(buffer(kind, xla::ARG_BUFFER, "argument", arg).map(|b| args.push(b)));
    }
    let mut rets = Vec::with_capacity(sig.rets);
    for i in 0..sig.rets {
        let kind = *frame.rets.types.add(i);
        let ret = *frame.rets.rets.add(i) as *const Buffer;
        check(buffer(kind, xla::RET_BUFFER, "result", ret).map(|b| rets.push(b)));
    }
    // Attributes come sorted by name: the i-th bound attribute is expected at
    // its name's position among the sorted bound names.
    let mut sorted: Vec<&str> = sig.attrs.iter().map(|(name, _)| *name).collect();
    sorted.sort_unstable();
    let mut values = Vec::with_capacity(sig.attrs.len());
    for &(name, dtype) in sig.attrs {
        let idx = sorted.iter().position(|n| *n == name).unwrap();
        check(scalar_attr(attrs, idx, name, dtype).map(|v| values.push(v)));
    }

    if !bad.is_empty() {
        let mut message = format!(
            "[{}] Failed to decode all FFI handler operands (bad operands at: {})",
            xla::stage_name(frame.stage),
            bad.join(", ")
        );
        if !diagnostics.is_empty() {
            message += "\nDiagnostics:\n";
            message += &diagnostics;
        }
        return Err(FfiError::invalid_argument(message));
    }
    let scratch = Scratch { api, ctx: frame.ctx, allocations: RefCell::new(Vec::new()) };
    Ok(Operands { stream, args, rets, attrs: values, scratch })
}

unsafe fn get_stream(api: &Api, ctx: *mut xla::ExecutionContext) -> Result<*mut c_void, String> {
    let Some(stream_get) = api.stream_get else {
        return Err("Failed to get platform stream: XLA_FFI_Stream_Get is missing".into());
    };
    let mut args = xla::StreamGetArgs {
        struct_size: xla::STREAM_GET_ARGS_STRUCT_SIZE,
        extension_start: ptr::null_mut(),
        ctx,
        stream: ptr::null_mut(),
    };
    let error = stream_get(&mut args);
    if error.is_null() {
        return Ok(args.stream);
    }
    let message = take_error_message(api, error);
    Err(format!("Failed to get platform stream: {message}"))
}

/// Reads and destroys an error the API returned.
unsafe fn take_error_message(api: &Api, error: *mut xla::Error) -> String {
    let mut message = String::new();
    if let Some(get_message) = api.error_get_message {
        let mut args = xla::ErrorGetMessageArgs {
            struct_size: xla::ERROR_GET_MESSAGE_ARGS_STRUCT_SIZE,
            extension_start: ptr::null_mut(),
            error,
            message: ptr::null(),
        };
        get_message(&mut args);
        if !args.message.is_null() {
            message = CStr::from_ptr(args.message).to_string_lossy().into_owned();
        }
    }
    if let Some(destroy) = api.error_destroy {
        let mut args = xla::ErrorDestroyArgs {
            struct_size: xla::ERROR_DESTROY_ARGS_STRUCT_SIZE,
            extension_start: ptr::null_mut(),
            error,
        };
        destroy(&mut args);
    }
    message
}

unsafe fn buffer<'a>(
    kind: c_int,
    expected: c_int,
    what: &str,
    buf: *const Buffer,
) -> Result<&'a Buffer, String> {
    if kind != expected {
        // XLA's C++ handlers print these two enums as numbers.
        return Err(format!("Wrong {what} type: expected {expected} but got {kind}"));
    }
    let buf = &*buf;
    if buf.struct_size < xla::BUFFER_STRUCT_SIZE {
        return Err(format!(
            "Unexpected XLA_FFI_Buffer size: expected at least {} got {}",
            xla::BUFFER_STRUCT_SIZE,
            buf.struct_size
        ));
    }
    Ok(buf)
}

unsafe fn scalar_attr(
    attrs: &xla::Attrs,
    idx: usize,
    name: &str,
    dtype: DataType,
) -> Result<Scalar, String> {
    let got = span_str(*attrs.names.add(idx));
    if got != name {
        return Err(format!("Attribute name mismatch: {got} vs {name}"));
    }
    let kind = *attrs.types.add(idx);
    if kind != xla::ATTR_SCALAR {
        return Err(format!(
            "Wrong attribute type: expected {} but got {}",
            xla::attr_type_name(xla::ATTR_SCALAR),
            xla::attr_type_name(kind)
        ));
    }
    let scalar = &*(*attrs.attrs.add(idx) as *const xla::Scalar);
    if scalar.dtype != dtype {
        return Err(format!(
            "Wrong scalar data type: expected {} but got {}",
            xla::data_type_name(dtype),
            xla::data_type_name(scalar.dtype)
        ));
    }
    Ok(match dtype {
        xla::PRED => Scalar::Pred(*(scalar.value as *const u8) != 0),
        xla::S32 => Scalar::S32(*(scalar.value as *const i32)),
        xla::F32 => Scalar::F32(*(scalar.value as *const f32)),
        other => unreachable!("no decoder for scalar attributes of dtype {other}"),
    })
}

/// Makes an XLA_FFI_Error through the API (which copies the message);
/// None if there is no API or it lacks XLA_FFI_Error_Create.
unsafe fn create_error(api: *const Api, err: &FfiError) -> Option<*mut xla::Error> {
    let api = api.as_ref()?;
    if api.struct_size < api_needs!(error_create) {
        return None;
    }
    let create = api.error_create?;
    let message = CString::new(err.message.replace('\0', " ")).unwrap();
    let mut args = xla::ErrorCreateArgs {
        struct_size: xla::ERROR_CREATE_ARGS_STRUCT_SIZE,
        extension_start: ptr::null_mut(),
        message: message.as_ptr() as *const c_char,
        errc: err.code,
    };
    Some(create(&mut args))
}
