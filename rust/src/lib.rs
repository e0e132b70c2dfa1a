//! The Rust binding: XLA FFI handlers over the kernel library's C ABI,
//! exposed to Python by PyO3 as the extension module `_jflash_attn_rust`.
//!
//! Its Python surface is the C++ binding's (cpp/jax_flash_attn_cpp.cc), on
//! which python/frontend relies:
//!   registrations()      {"fwd", "bwd", "varlen_fwd", "varlen_bwd", "kvcache_fwd": capsule}
//!                        of XLA FFI handlers
//!   has_kernel(dtype, head_dim), has_kvcache_kernel(dtype, head_dim),
//!   build_config(), abi_version(),
//!   launch_counts() -> {"fwd_cut", "bwd_cut", "uncut_for_scratch": int}
//!   bwd_workspace_elems(batch, seqlen_q, num_heads, head_dim, deterministic=False,
//!                       num_sms=0) -> (int, int)   (num_sms 0: ask num_sms())
//!   varlen_bwd_workspace_elems(batch, total_q, num_heads, head_dim,
//!                              deterministic=False, num_sms=0) -> (int, int)
//!   kvcache_splits(batch, seqlen_q, seqlen_k, num_heads, head_dim, num_splits,
//!                  num_sms) -> (splits, workspace_elems)   (num_splits 0: heuristic)
//!   num_sms(device=-1) -> int   (RuntimeError without a GPU)
//!   has_sm90_kernel(dtype, head_dim, backward=False) -> bool   (our Hopper kernels cover them)
//!   uses_sm90(dtype, batch, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim,
//!             cc_major, cc_minor, is_causal=False, window_left=-1, window_right=-1,
//!             softcap=0.0, has_alibi=False, is_varlen=False, backward=False,
//!             deterministic=False) -> bool
//!                        (the C ABI's dispatch rules, jfa_fwd_uses_sm90 / jfa_bwd_uses_sm90)
//! All arguments are positional-only.
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

    use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::types::{PyByteArray, PyBytes, PyDict};

    use crate::handlers::{
        flash_bwd, flash_fwd, flash_kvcache_fwd, flash_varlen_bwd, flash_varlen_fwd,
    };
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
        targets.set_item("varlen_fwd", capsule(py, flash_varlen_fwd)?)?;
        targets.set_item("varlen_bwd", capsule(py, flash_varlen_bwd)?)?;
        targets.set_item("kvcache_fwd", capsule(py, flash_kvcache_fwd)?)?;
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
    #[pyo3(signature = (dtype, head_dim, /))]
    fn has_kvcache_kernel(
        #[pyo3(from_py_with = string_arg)] dtype: String,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
    ) -> PyResult<bool> {
        let dtype = parse_dtype(&dtype)?;
        // SAFETY: a pure query of the library.
        Ok(unsafe { kernels::jfa_has_kvcache_kernel(dtype, head_dim) } != 0)
    }

    #[pyfunction]
    #[pyo3(signature = (dtype, head_dim, backward=false, /))]
    fn has_sm90_kernel(
        #[pyo3(from_py_with = string_arg)] dtype: String,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
        backward: bool,
    ) -> PyResult<bool> {
        let dtype = parse_dtype(&dtype)?;
        // SAFETY: pure queries of the library.
        Ok(unsafe {
            if backward {
                kernels::jfa_has_sm90_bwd_kernel(dtype, head_dim)
            } else {
                kernels::jfa_has_sm90_kernel(dtype, head_dim)
            }
        } != 0)
    }

    /// Integers the C ABI takes as int, saturated as the C++ binding does: past
    /// int32 a window is as unbounded, and a compute capability as far from
    /// 9.0, as at the limit.
    fn saturate(x: i64) -> i32 {
        x.clamp(i32::MIN as i64, i32::MAX as i64) as i32
    }

    #[pyfunction]
    #[pyo3(signature = (dtype, batch, seqlen_q, seqlen_k, num_heads, num_heads_k, head_dim,
                        cc_major, cc_minor, is_causal=false, window_left=-1, window_right=-1,
                        softcap=0.0, has_alibi=false, is_varlen=false, backward=false,
                        deterministic=false, /))]
    #[allow(clippy::too_many_arguments)]
    fn uses_sm90(
        #[pyo3(from_py_with = string_arg)] dtype: String,
        #[pyo3(from_py_with = int64_arg)] batch: i64,
        #[pyo3(from_py_with = int64_arg)] seqlen_q: i64,
        #[pyo3(from_py_with = int64_arg)] seqlen_k: i64,
        #[pyo3(from_py_with = int64_arg)] num_heads: i64,
        #[pyo3(from_py_with = int64_arg)] num_heads_k: i64,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
        #[pyo3(from_py_with = int64_arg)] cc_major: i64,
        #[pyo3(from_py_with = int64_arg)] cc_minor: i64,
        is_causal: bool,
        #[pyo3(from_py_with = int64_arg)] window_left: i64,
        #[pyo3(from_py_with = int64_arg)] window_right: i64,
        softcap: f64,
        has_alibi: bool,
        is_varlen: bool,
        backward: bool,
        deterministic: bool,
    ) -> PyResult<bool> {
        let shape = AttentionShape {
            batch,
            seqlen_q,
            seqlen_k,
            num_heads,
            num_heads_k,
            head_dim,
            dtype: parse_dtype(&dtype)?,
            softmax_scale: 1.0, // the rule does not depend on it
            is_causal: is_causal as i32,
            window_left: saturate(window_left),
            window_right: saturate(window_right),
            softcap: softcap as f32,
            deterministic: deterministic as i32,
        };
        let rule = if backward {
            kernels::jfa_bwd_uses_sm90
        } else {
            kernels::jfa_fwd_uses_sm90
        };
        // SAFETY: a pure function of a local.
        Ok(unsafe {
            rule(
                &shape,
                has_alibi as i32,
                is_varlen as i32,
                saturate(cc_major),
                saturate(cc_minor),
            )
        } != 0)
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
    fn launch_counts(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let mut c = kernels::LaunchCounts::default();
        // SAFETY: a pure query writing into a local.
        unsafe { kernels::jfa_get_launch_counts(&mut c) };
        let counts = PyDict::new(py);
        counts.set_item("fwd_cut", c.fwd_cut)?;
        counts.set_item("bwd_cut", c.bwd_cut)?;
        counts.set_item("uncut_for_scratch", c.uncut_for_scratch)?;
        Ok(counts)
    }

    /// The C++ binding's query_num_sms: the C ABI's jfa_num_sms, its failure
    /// a RuntimeError with the library's message.
    fn query_num_sms(device: i64) -> PyResult<i64> {
        if device < -1 || device > i32::MAX as i64 {
            return Err(PyValueError::new_err(format!(
                "device must be -1 (all) or a CUDA device ordinal, got {device}"
            )));
        }
        let mut sms = 0;
        // SAFETY: all pointers are to locals.
        kernels::with_err(|err, len| unsafe {
            kernels::jfa_num_sms(device as i32, &mut sms, err, len)
        })
        .map_err(|failure| PyRuntimeError::new_err(failure.message))?;
        Ok(sms as i64)
    }

    /// The SM count the workspace functions take: num_sms checked, and 0
    /// replaced by the GPU's where the deterministic backward depends on it.
    fn workspace_sms(deterministic: bool, num_sms: i64) -> PyResult<i32> {
        if !(0..=i32::MAX as i64).contains(&num_sms) {
            return Err(PyValueError::new_err(format!(
                "num_sms must be 0 (ask the GPU) or a positive SM count, got {num_sms}"
            )));
        }
        let num_sms = if deterministic && num_sms == 0 { query_num_sms(-1)? } else { num_sms };
        Ok(num_sms as i32)
    }

    #[pyfunction]
    #[pyo3(signature = (batch, seqlen_q, num_heads, head_dim, deterministic=false, num_sms=0, /))]
    fn bwd_workspace_elems(
        #[pyo3(from_py_with = int64_arg)] batch: i64,
        #[pyo3(from_py_with = int64_arg)] seqlen_q: i64,
        #[pyo3(from_py_with = int64_arg)] num_heads: i64,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
        deterministic: bool,
        #[pyo3(from_py_with = int64_arg)] num_sms: i64,
    ) -> PyResult<(i64, i64)> {
        let num_sms = workspace_sms(deterministic, num_sms)?;
        let shape = AttentionShape {
            batch,
            seqlen_q,
            num_heads,
            head_dim,
            deterministic: deterministic as i32,
            ..Default::default()
        };
        let (mut dq_accum, mut softmax_d) = (0, 0);
        // SAFETY: all pointers are to locals.
        unsafe { kernels::jfa_bwd_workspace_elems(&shape, num_sms, &mut dq_accum, &mut softmax_d) };
        Ok((dq_accum, softmax_d))
    }

    #[pyfunction]
    #[pyo3(signature = (batch, total_q, num_heads, head_dim, deterministic=false, num_sms=0, /))]
    fn varlen_bwd_workspace_elems(
        #[pyo3(from_py_with = int64_arg)] batch: i64,
        #[pyo3(from_py_with = int64_arg)] total_q: i64,
        #[pyo3(from_py_with = int64_arg)] num_heads: i64,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
        deterministic: bool,
        #[pyo3(from_py_with = int64_arg)] num_sms: i64,
    ) -> PyResult<(i64, i64)> {
        let num_sms = workspace_sms(deterministic, num_sms)?;
        let shape = AttentionShape {
            batch,
            num_heads,
            head_dim,
            deterministic: deterministic as i32,
            ..Default::default()
        };
        let (mut dq_accum, mut softmax_d) = (0, 0);
        // SAFETY: all pointers are to locals.
        unsafe {
            kernels::jfa_varlen_bwd_workspace_elems(
                &shape,
                total_q,
                num_sms,
                &mut dq_accum,
                &mut softmax_d,
            )
        };
        Ok((dq_accum, softmax_d))
    }

    #[pyfunction]
    #[pyo3(signature = (batch, seqlen_q, seqlen_k, num_heads, head_dim, num_splits, num_sms, /))]
    fn kvcache_splits(
        #[pyo3(from_py_with = int64_arg)] batch: i64,
        #[pyo3(from_py_with = int64_arg)] seqlen_q: i64,
        #[pyo3(from_py_with = int64_arg)] seqlen_k: i64,
        #[pyo3(from_py_with = int64_arg)] num_heads: i64,
        #[pyo3(from_py_with = int64_arg)] head_dim: i64,
        #[pyo3(from_py_with = int64_arg)] num_splits: i64,
        #[pyo3(from_py_with = int64_arg)] num_sms: i64,
    ) -> PyResult<(i32, i64)> {
        if !(0..=128).contains(&num_splits) {
            return Err(PyValueError::new_err(format!(
                "num_splits must be 0 (choose) or in [1, 128], got {num_splits}"
            )));
        }
        if !(1..=i32::MAX as i64).contains(&num_sms) {
            return Err(PyValueError::new_err(format!(
                "num_sms must be a positive SM count, got {num_sms}"
            )));
        }
        let shape =
            AttentionShape { batch, seqlen_q, seqlen_k, num_heads, head_dim, ..Default::default() };
        // SAFETY: pure computations on a local.
        Ok(unsafe {
            let splits = kernels::jfa_kvcache_num_splits(&shape, num_splits as i32, num_sms as i32);
            (splits, kernels::jfa_kvcache_workspace_elems(&shape, splits))
        })
    }

    #[pyfunction]
    #[pyo3(signature = (device=-1, /))]
    fn num_sms(#[pyo3(from_py_with = int64_arg)] device: i64) -> PyResult<i64> {
        query_num_sms(device)
    }

    /// jax-flash-attn Rust binding: XLA FFI handlers for FlashAttention kernels.
    #[pymodule]
    fn _jflash_attn_rust(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(registrations, m)?)?;
        m.add_function(wrap_pyfunction!(has_kernel, m)?)?;
        m.add_function(wrap_pyfunction!(has_kvcache_kernel, m)?)?;
        m.add_function(wrap_pyfunction!(has_sm90_kernel, m)?)?;
        m.add_function(wrap_pyfunction!(uses_sm90, m)?)?;
        m.add_function(wrap_pyfunction!(build_config, m)?)?;
        m.add_function(wrap_pyfunction!(abi_version, m)?)?;
        m.add_function(wrap_pyfunction!(launch_counts, m)?)?;
        m.add_function(wrap_pyfunction!(bwd_workspace_elems, m)?)?;
        m.add_function(wrap_pyfunction!(varlen_bwd_workspace_elems, m)?)?;
        m.add_function(wrap_pyfunction!(kvcache_splits, m)?)?;
        m.add_function(wrap_pyfunction!(num_sms, m)?)?;
        Ok(())
    }
}
