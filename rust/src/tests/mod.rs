//! Unit tests, without a GPU: hand-built call frames through the handlers,
//! against a fake XLA API and the real C ABI's validation.

mod abi_layout;
mod fake_xla;
mod frame_checks;
mod handler_calls;
