//! Call-frame decoding before any kernel code runs: struct sizes, XLA's
//! metadata query, stage, operand counts and types, attributes, the stream.
//! Messages are those of XLA's C++ handlers (xla/ffi/api/api.h).

use std::ptr;

use super::fake_xla::*;
use crate::handlers::{bwd_with, fwd_with, kvcache_fwd_with, varlen_bwd_with, varlen_fwd_with};
use crate::xla_ffi as xla;

/// Runs the handler; a call that fails launches nothing.
fn run_checked(handler: Entry, spec: &Spec) -> Option<(i32, String)> {
    let lib = Recorder::default();
    let result = run(handler, &lib, spec);
    if result.is_some() {
        assert!(lib.launches.borrow().is_empty());
    }
    result
}

fn run_fwd(spec: &Spec) -> Option<(i32, String)> {
    run_checked(fwd_with, spec)
}

fn invalid(message: &str) -> Option<(i32, String)> {
    Some((xla::ERROR_INVALID_ARGUMENT, message.to_string()))
}

#[test]
fn call_frame_size_must_match() {
    let mut spec = fwd_spec();
    spec.frame_size -= 8;
    let expected = format!(
        "Unexpected XLA_FFI_CallFrame size: expected {} got {}. Check installed software versions.",
        xla::CALL_FRAME_STRUCT_SIZE,
        xla::CALL_FRAME_STRUCT_SIZE - 8
    );
    assert_eq!(run_fwd(&spec), invalid(&expected));
}

fn metadata_call(ext_size: usize, metadata_size: usize) -> (Option<(i32, String)>, xla::Metadata) {
    metadata_call_with(ext_size, metadata_size, true)
}

fn metadata_call_with(
    ext_size: usize,
    metadata_size: usize,
    with_api: bool,
) -> (Option<(i32, String)>, xla::Metadata) {
    let mut metadata = xla::Metadata {
        struct_size: metadata_size,
        api_version: xla::ApiVersion {
            struct_size: xla::API_VERSION_STRUCT_SIZE,
            extension_start: ptr::null_mut(),
            major_version: -1,
            minor_version: -1,
        },
        traits: 99,
        state_type_id: 99,
    };
    let mut ext = xla::MetadataExtension {
        extension_base: xla::ExtensionBase {
            struct_size: ext_size,
            type_: xla::EXTENSION_METADATA,
            next: ptr::null_mut(),
        },
        metadata: &mut metadata,
    };
    // XLA's query has no operands at all.
    let spec = Spec { args: vec![], rets: vec![], attrs: vec![], ..fwd_spec() };
    let mut call = build(&spec);
    call.frame.extension_start = &mut ext.extension_base;
    if !with_api {
        call.frame.api = ptr::null();
    }
    let lib = Recorder::default();
    let result = outcome(unsafe { bwd_with(&lib, &mut call.frame) });
    assert!(lib.launches.borrow().is_empty());
    (result, metadata)
}

#[test]
fn metadata_query_reports_api_version_and_no_traits() {
    let (result, metadata) =
        metadata_call(xla::METADATA_EXTENSION_STRUCT_SIZE, std::mem::size_of::<xla::Metadata>());
    assert_eq!(result, None);
    let v = metadata.api_version;
    assert_eq!(
        (v.struct_size, v.major_version, v.minor_version),
        (xla::API_VERSION_STRUCT_SIZE, 0, 3)
    );
    assert_eq!((metadata.traits, metadata.state_type_id), (0, 0));
}

#[test]
fn metadata_query_leaves_fields_past_the_callers_struct_alone() {
    let (result, metadata) =
        metadata_call(xla::METADATA_EXTENSION_STRUCT_SIZE, xla::METADATA_STRUCT_SIZE);
    assert_eq!(result, None);
    assert_eq!((metadata.traits, metadata.state_type_id), (0, 99));
}

#[test]
fn metadata_query_may_come_without_an_api() {
    // Some XLA versions build the query with api = NULL.
    let (result, metadata) = metadata_call_with(
        xla::METADATA_EXTENSION_STRUCT_SIZE,
        std::mem::size_of::<xla::Metadata>(),
        false,
    );
    assert_eq!(result, None);
    assert_eq!((metadata.api_version.major_version, metadata.api_version.minor_version), (0, 3));
    // Nothing to report a failure through: the metadata stays unset.
    let (result, metadata) = metadata_call_with(8, xla::METADATA_STRUCT_SIZE, false);
    assert_eq!(result, None);
    assert_eq!(metadata.api_version.major_version, -1);
}

#[test]
fn metadata_query_checks_struct_sizes() {
    let (result, _) = metadata_call(8, xla::METADATA_STRUCT_SIZE);
    let expected = format!(
        "Unexpected XLA_FFI_Metadata_Extension size: expected at least {} got 8. Check installed software versions.",
        xla::METADATA_EXTENSION_STRUCT_SIZE
    );
    assert_eq!(result, invalid(&expected));
    let (result, _) = metadata_call(xla::METADATA_EXTENSION_STRUCT_SIZE, 16);
    let expected = format!(
        "Unexpected XLA_FFI_Metadata size: expected at least {} got 16. Check installed software versions.",
        xla::METADATA_STRUCT_SIZE
    );
    assert_eq!(result, invalid(&expected));
}

#[test]
fn only_the_execute_stage_is_handled() {
    let spec = Spec { stage: 1, ..fwd_spec() };
    assert_eq!(
        run_fwd(&spec),
        invalid("Wrong execution stage: expected `execute` but got `prepare`")
    );
}

#[test]
fn operand_counts_must_match() {
    let mut spec = fwd_spec();
    spec.args.pop();
    assert_eq!(
        run_fwd(&spec),
        invalid("[execute] Wrong number of arguments: expected 4 but got 3")
    );
    let mut spec = fwd_spec();
    spec.rets.push(spec.rets[0].clone());
    assert_eq!(run_fwd(&spec), invalid("[execute] Wrong number of results: expected 2 but got 3"));
    let mut spec = fwd_spec();
    spec.attrs.remove(2);
    assert_eq!(
        run_fwd(&spec),
        invalid(
            "[execute] Wrong number of attributes: expected 6 but got 5 with name(s): \
             has_alibi, is_causal, softmax_scale, window_left, window_right"
        )
    );
    spec.attrs.clear();
    assert_eq!(
        run_fwd(&spec),
        invalid("[execute] Wrong number of attributes: expected 6 but got 0")
    );
}

#[test]
fn bad_operands_are_reported_together_by_binding_index() {
    // Binding order: stream 0, q k v alibi_slopes 1-4, out lse 5-6,
    // softmax_scale 7, is_causal 8, window_left 9, window_right 10,
    // softcap 11, has_alibi 12.
    let mut spec = fwd_spec();
    spec.stream_error = Some("no stream here");
    spec.args[1].kind = 7;
    spec.rets[1].kind = 2;
    spec.attrs[4] = attr("window_left", 5, [0; 8]); // S64
    spec.attrs[2].kind = 4; // softcap as a string
    let expected =
        "[execute] Failed to decode all FFI handler operands (bad operands at: 0, 2, 6, 9, 11)\n\
                    Diagnostics:\n\
                    Failed to get platform stream: no stream here\
                    Wrong argument type: expected 1 but got 7\
                    Wrong result type: expected 1 but got 2\
                    Wrong scalar data type: expected S32 but got S64\
                    Wrong attribute type: expected scalar but got string";
    assert_eq!(run_fwd(&spec), invalid(expected));
}

#[test]
fn attributes_must_come_sorted_by_name() {
    let mut spec = fwd_spec();
    spec.attrs.swap(1, 2); // has_alibi, softcap, is_causal, ...
    let expected = "[execute] Failed to decode all FFI handler operands (bad operands at: 8, 11)\n\
                    Diagnostics:\n\
                    Attribute name mismatch: softcap vs is_causal\
                    Attribute name mismatch: is_causal vs softcap";
    assert_eq!(run_fwd(&spec), invalid(expected));
}

#[test]
fn buffers_smaller_than_the_header_says_are_refused() {
    let lib = Recorder::default();
    let mut call = build(&fwd_spec());
    unsafe { (*(*call.frame.args.args.add(2) as *mut xla::Buffer)).struct_size = 16 };
    let expected = format!(
        "[execute] Failed to decode all FFI handler operands (bad operands at: 3)\n\
         Diagnostics:\nUnexpected XLA_FFI_Buffer size: expected at least {} got 16",
        xla::BUFFER_STRUCT_SIZE
    );
    assert_eq!(outcome(unsafe { fwd_with(&lib, &mut call.frame) }), invalid(&expected));
}

#[test]
fn the_runtime_api_must_be_version_0_and_large_enough() {
    let lib = Recorder::default();
    let mut api = fake_api();
    api.api_version.major_version = 1;
    let mut call = build_with_api(&fwd_spec(), api);
    assert_eq!(
        outcome(unsafe { fwd_with(&lib, &mut call.frame) }),
        invalid("XLA FFI API version 1.3 is not supported by this handler (built for 0.3)")
    );
    let mut api = fake_api();
    api.struct_size = std::mem::offset_of!(xla::Api, stream_get);
    let mut call = build_with_api(&fwd_spec(), api);
    let expected = format!(
        "Unexpected XLA_FFI_Api size: expected at least {} got {}. Check installed software versions.",
        std::mem::offset_of!(xla::Api, stream_get) + std::mem::size_of::<usize>(),
        std::mem::offset_of!(xla::Api, stream_get)
    );
    assert_eq!(outcome(unsafe { fwd_with(&lib, &mut call.frame) }), invalid(&expected));
}

#[test]
fn the_backward_decodes_deterministic_too() {
    let lib = Recorder::default();
    let mut spec = bwd_spec();
    spec.attrs.remove(0); // no deterministic
    let mut call = build(&spec);
    assert_eq!(
        outcome(unsafe { bwd_with(&lib, &mut call.frame) }),
        invalid(
            "[execute] Wrong number of attributes: expected 7 but got 6 with name(s): \
             has_alibi, is_causal, softcap, softmax_scale, window_left, window_right"
        )
    );
    // Binding order: stream 0, 7 args 1-7, 5 rets 8-12, then softmax_scale 13,
    // is_causal 14, window_left 15, window_right 16, softcap 17, has_alibi 18,
    // deterministic 19.
    let mut spec = bwd_spec();
    spec.attrs[0] = attr("deterministic", xla::S32, [1, 0, 0, 0, 0, 0, 0, 0]);
    spec.attrs[1] = attr("has_alibi", xla::F32, [0; 8]);
    let mut call = build(&spec);
    assert_eq!(
        outcome(unsafe { bwd_with(&lib, &mut call.frame) }),
        invalid(
            "[execute] Failed to decode all FFI handler operands (bad operands at: 18, 19)\n\
             Diagnostics:\n\
             Wrong scalar data type: expected PRED but got F32\
             Wrong scalar data type: expected PRED but got S32"
        )
    );
    assert!(lib.launches.borrow().is_empty());
}

#[test]
fn varlen_operand_counts_must_match() {
    let mut spec = varlen_fwd_spec();
    spec.args.remove(4); // cu_seqlens_k
    assert_eq!(
        run_checked(varlen_fwd_with, &spec),
        invalid("[execute] Wrong number of arguments: expected 6 but got 5")
    );
    // A dense call frame is not a varlen one.
    assert_eq!(
        run_checked(varlen_bwd_with, &bwd_spec()),
        invalid("[execute] Wrong number of arguments: expected 9 but got 7")
    );
    let mut spec = varlen_bwd_spec();
    spec.rets.pop();
    assert_eq!(
        run_checked(varlen_bwd_with, &spec),
        invalid("[execute] Wrong number of results: expected 5 but got 4")
    );
}

#[test]
fn the_varlen_handlers_need_the_seqlen_bounds() {
    let mut spec = varlen_fwd_spec();
    spec.attrs.retain(|a| a.name != "max_seqlen_k");
    assert_eq!(
        run_checked(varlen_fwd_with, &spec),
        invalid(
            "[execute] Wrong number of attributes: expected 8 but got 7 with name(s): \
             has_alibi, is_causal, max_seqlen_q, softcap, softmax_scale, window_left, window_right"
        )
    );
    // The dense attributes alone.
    let mut spec = varlen_bwd_spec();
    spec.attrs = bwd_attrs(0.125, true, -1, -1, 0.0, false, false);
    assert_eq!(
        run_checked(varlen_bwd_with, &spec),
        invalid(
            "[execute] Wrong number of attributes: expected 9 but got 7 with name(s): \
             deterministic, has_alibi, is_causal, softcap, softmax_scale, window_left, window_right"
        )
    );
    // And the dense handlers take none of them.
    let mut spec = fwd_spec();
    spec.attrs = varlen_fwd_spec().attrs;
    assert_eq!(
        run_fwd(&spec),
        invalid(
            "[execute] Wrong number of attributes: expected 6 but got 8 with name(s): \
             has_alibi, is_causal, max_seqlen_k, max_seqlen_q, softcap, softmax_scale, \
             window_left, window_right"
        )
    );
}

#[test]
fn varlen_fwd_bad_operands_are_reported_by_binding_index() {
    // Binding order: stream 0, q k v cu_seqlens_q cu_seqlens_k alibi_slopes
    // 1-6, out lse 7-8, softmax_scale 9, is_causal 10, window_left 11,
    // window_right 12, softcap 13, has_alibi 14, max_seqlen_q 15,
    // max_seqlen_k 16. Sorted: has_alibi, is_causal, max_seqlen_k,
    // max_seqlen_q, softcap, ...
    let mut spec = varlen_fwd_spec();
    spec.args[3].kind = 7;
    spec.attrs[3] = f32_attr("max_seqlen_q", 128.0);
    spec.attrs[2] = attr("max_seqlen_k", 5, [0; 8]); // S64
    let expected =
        "[execute] Failed to decode all FFI handler operands (bad operands at: 4, 15, 16)\n\
         Diagnostics:\n\
         Wrong argument type: expected 1 but got 7\
         Wrong scalar data type: expected S32 but got F32\
         Wrong scalar data type: expected S32 but got S64";
    assert_eq!(run_checked(varlen_fwd_with, &spec), invalid(expected));
    // Misnamed: max_seqlens_q still sorts where max_seqlen_q would.
    let mut spec = varlen_fwd_spec();
    spec.attrs[3].name = "max_seqlens_q".into();
    let expected = "[execute] Failed to decode all FFI handler operands (bad operands at: 15)\n\
                    Diagnostics:\n\
                    Attribute name mismatch: max_seqlens_q vs max_seqlen_q";
    assert_eq!(run_checked(varlen_fwd_with, &spec), invalid(expected));
}

#[test]
fn varlen_bwd_bad_operands_are_reported_by_binding_index() {
    // Binding order: stream 0, 9 args 1-9, 5 rets 10-14, then softmax_scale
    // 15 .. has_alibi 20, max_seqlen_q 21, max_seqlen_k 22, deterministic 23.
    // Sorted: deterministic, has_alibi, is_causal, max_seqlen_k,
    // max_seqlen_q, ...
    let mut spec = varlen_bwd_spec();
    spec.args[7].kind = 2; // cu_seqlens_k
    spec.rets[3].kind = 3; // dq_accum
    spec.attrs[0] = s32_attr("deterministic", 1);
    spec.attrs[4] = pred_attr("max_seqlen_q", true);
    spec.attrs[3].kind = 2; // max_seqlen_k as a dictionary
    let expected =
        "[execute] Failed to decode all FFI handler operands (bad operands at: 8, 13, 21, 22, 23)\n\
         Diagnostics:\n\
         Wrong argument type: expected 1 but got 2\
         Wrong result type: expected 1 but got 3\
         Wrong scalar data type: expected S32 but got PRED\
         Wrong attribute type: expected scalar but got dictionary\
         Wrong scalar data type: expected PRED but got S32";
    assert_eq!(run_checked(varlen_bwd_with, &spec), invalid(expected));
}

#[test]
fn kvcache_operand_counts_must_match() {
    let mut spec = kvcache_fwd_spec();
    spec.args.remove(4); // block_table
    assert_eq!(
        run_checked(kvcache_fwd_with, &spec),
        invalid("[execute] Wrong number of arguments: expected 6 but got 5")
    );
    // A varlen forward's frame has the args but not the workspace.
    assert_eq!(
        run_checked(kvcache_fwd_with, &varlen_fwd_spec()),
        invalid("[execute] Wrong number of results: expected 3 but got 2")
    );
    let mut spec = kvcache_fwd_spec();
    spec.attrs.retain(|a| a.name != "num_splits");
    assert_eq!(
        run_checked(kvcache_fwd_with, &spec),
        invalid(
            "[execute] Wrong number of attributes: expected 8 but got 7 with name(s): \
             has_alibi, has_block_table, is_causal, softcap, softmax_scale, window_left, \
             window_right"
        )
    );
}

#[test]
fn kvcache_bad_operands_are_reported_by_binding_index() {
    // Binding order: stream 0, q k_cache v_cache seqlens_k block_table
    // alibi_slopes 1-6, out lse workspace 7-9, softmax_scale 10, is_causal 11,
    // window_left 12, window_right 13, softcap 14, has_alibi 15,
    // has_block_table 16, num_splits 17. Sorted: has_alibi, has_block_table,
    // is_causal, num_splits, softcap, ...
    let mut spec = kvcache_fwd_spec();
    spec.rets[2].kind = 2; // workspace
    spec.attrs[1] = s32_attr("has_block_table", 1);
    spec.attrs[3] = pred_attr("num_splits", true);
    let expected =
        "[execute] Failed to decode all FFI handler operands (bad operands at: 9, 16, 17)\n\
         Diagnostics:\n\
         Wrong result type: expected 1 but got 2\
         Wrong scalar data type: expected PRED but got S32\
         Wrong scalar data type: expected S32 but got PRED";
    assert_eq!(run_checked(kvcache_fwd_with, &spec), invalid(expected));
    // Misnamed: num_split still sorts where num_splits would.
    let mut spec = kvcache_fwd_spec();
    spec.attrs[3].name = "num_split".into();
    let expected = "[execute] Failed to decode all FFI handler operands (bad operands at: 17)\n\
                    Diagnostics:\n\
                    Attribute name mismatch: num_split vs num_splits";
    assert_eq!(run_checked(kvcache_fwd_with, &spec), invalid(expected));
}
