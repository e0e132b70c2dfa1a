//! The Rust binding: XLA FFI handlers over the kernel library's C ABI,
//! exposed to Python by PyO3 as the extension module `_jflash_attn_rust`.
//!
//! Its Python surface is the C++ binding's (cpp/jax_flash_attn_cpp.cc), on
//! which python/frontend relies:
//!   registrations()      {"fwd": capsule, "bwd": capsule} of XLA FFI handlers
//!   has_kernel(dtype, head_dim), build_config(), abi_version()
//!   bwd_workspace_elems(batch, seqlen_q, num_heads, head_dim) -> (int, int)
//!
//! The Python module is left out of the unit tests (`cfg(test)`): a test
//! executable has no libpython to resolve it against.

#![cfg_attr(test, allow(dead_code))]

mod call_frame;
mod handlers;
mod kernels;
mod xla_ffi;

#[cfg(test)]
mod tests;

#[cfg(not(test))]
mod python {
    use std::ffi::{c_void, CStr};
    use std::ptr;

    use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::types::{PyByteArray, PyBytes, PyDict};

    use crate::handlers::{flash_bwd, flash_fwd};
    use crate::kernels::{self, AttentionShape};
    use crate::xla_ffi::Handler;

    /// A capsule holding the handler's address itself, with no name: what
    /// pybind11's py::capsule(void*) makes and jax.ffi.register_ffi_target
    /// reads. (PyO3's own PyCapsule would hold a pointer to a copy.)
    fn capsule(py: Python<'_>, handler: Handler) -> PyResult<Bound<'_, PyAny>> {
        // SAFETY: PyCapsule_New returns a new reference or NULL with an exception set.
        unsafe {
            let raw = pyo3::ffi::PyCapsule_New(handler as *mut c_void, ptr::null(), None);
            Bound::from_owned_ptr_or_err(py, raw)
        }
    }

    #[pyfunction]
    fn registrations(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let targets = PyDict::new(py);
        targets.set_item("fwd", capsule(py, flash_fwd)?)?;
        targets.set_item("bwd", capsule(py, flash_bwd)?)?;
        Ok(targets)
    }

    // Argument conversion as pybind11 does it for the C++ binding's
    // std::string and int64_t parameters: a str, bytes or bytearray name;
    // an int (or __index__) that must fit, else TypeError, not OverflowError.
    fn string_arg(obj: &Bound<'_, PyAny>) -> PyResult<String> {
        if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
            return Ok(String::from_utf8_lossy(&obj.extract::<Vec<u8>>()?).into_owned());
        }
        obj.extract()
    }

    fn int64_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
        obj.extract().map_err(|err: PyErr| {
            if err.is_instance_of::<PyOverflowError>(obj.py()) {
                PyTypeError::new_err(err.value(obj.py()).to_string())
            } else {
                err
            }
        })
    }

    fn parse_dtype(name: &str) -> PyResult<i32> {
        match name {
            "float16" => Ok(kernels::JFA_FLOAT16),
            "bfloat16" => Ok(kernels::JFA_BFLOAT16),
            _ => Err(PyValueError::new_err(format!(
                "dtype must be 'float16' or 'bfloat16', got '{name}'"
            ))),
        }
    }

    // Arguments are positional-only, like those of the C++ binding's functions.
    #[pyfunction]
    #[pyo3(signature = (dtype, head_dim, /))]
    fn has_kernel(
        #[pyo3(from_py_with = string_arg)] dtype: String,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
    ) -> PyResult<bool> {
        let dtype = parse_dtype(&dtype)?;
        // SAFETY: a pure query of the library.
        Ok(unsafe { kernels::jfa_has_kernel(dtype, head_dim) } != 0)
    }

    #[pyfunction]
    fn build_config() -> String {
        // SAFETY: the library returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(kernels::jfa_build_config()) }.to_string_lossy().into_owned()
    }

    #[pyfunction]
    fn abi_version() -> i32 {
        // SAFETY: a pure query of the library.
        unsafe { kernels::jfa_abi_version() }
    }

    #[pyfunction]
    #[pyo3(signature = (batch, seqlen_q, num_heads, head_dim, /))]
    fn bwd_workspace_elems(
        #[pyo3(from_py_with = int64_arg)] batch: i64,
        #[pyo3(from_py_with = int64_arg)] seqlen_q: i64,
        #[pyo3(from_py_with = int64_arg)] num_heads: i64,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
    ) -> (i64, i64) {
        let shape = AttentionShape { batch, seqlen_q, num_heads, head_dim, ..Default::default() };
        let (mut dq_accum, mut softmax_d) = (0, 0);
        // SAFETY: all pointers are to locals.
        unsafe { kernels::jfa_bwd_workspace_elems(&shape, &mut dq_accum, &mut softmax_d) };
        (dq_accum, softmax_d)
    }

    /// jax-flash-attn Rust binding: XLA FFI handlers for FlashAttention kernels.
    #[pymodule]
    fn _jflash_attn_rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(registrations, m)?)?;
        m.add_function(wrap_pyfunction!(has_kernel, m)?)?;
        m.add_function(wrap_pyfunction!(build_config, m)?)?;
        m.add_function(wrap_pyfunction!(abi_version, m)?)?;
        m.add_function(wrap_pyfunction!(bwd_workspace_elems, m)?)?;
        Ok(())
    }
}
