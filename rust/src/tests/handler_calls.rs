//! Whole handler calls: what a valid call launches, and how buffer
//! validation (the C ABI's) and kernel failures come back to XLA.

use std::ffi::{c_char, CStr};

use super::fake_xla::*;
use crate::handlers::{bwd_with, fwd_with, kvcache_fwd_with, varlen_bwd_with, varlen_fwd_with};
use crate::kernels::{self, AttentionShape, JfaBuffer};
use crate::xla_ffi as xla;

fn run_fwd(lib: &Recorder, spec: &Spec) -> Option<(i32, String)> {
    run(fwd_with, lib, spec)
}

fn run_bwd(lib: &Recorder, spec: &Spec) -> Option<(i32, String)> {
    run(bwd_with, lib, spec)
}

fn run_varlen_fwd(lib: &Recorder, spec: &Spec) -> Option<(i32, String)> {
    run(varlen_fwd_with, lib, spec)
}

fn run_varlen_bwd(lib: &Recorder, spec: &Spec) -> Option<(i32, String)> {
    run(varlen_bwd_with, lib, spec)
}

fn run_kvcache_fwd(lib: &Recorder, spec: &Spec) -> Option<(i32, String)> {
    run(kvcache_fwd_with, lib, spec)
}

/// A scalar attribute's value in the spec, widened.
fn attr_value(spec: &Spec, name: &str) -> Option<i64> {
    let a = spec.attrs.iter().find(|a| a.name == name)?;
    Some(match a.dtype {
        xla::S32 => i32::from_ne_bytes(a.value[..4].try_into().unwrap()).into(),
        _ => a.value[0].into(),
    })
}

/// What the C ABI itself says about these buffers (args then rets); a
/// varlen call (one with max_seqlen_q) with the spec's seqlen bounds, a
/// KV-cache call (one with has_block_table) paged as the spec says.
fn c_abi_message(spec: &Spec, backward: bool) -> String {
    let buffers: Vec<JfaBuffer> = spec
        .args
        .iter()
        .chain(&spec.rets)
        .map(|t| JfaBuffer { xla_dtype: t.dtype, rank: t.dims.len() as i64, dims: t.dims.as_ptr() })
        .collect();
    let varlen = attr_value(spec, "max_seqlen_q").is_some();
    let kvcache = attr_value(spec, "has_block_table");
    let mut shape = AttentionShape {
        seqlen_q: attr_value(spec, "max_seqlen_q").unwrap_or(0),
        seqlen_k: attr_value(spec, "max_seqlen_k").unwrap_or(0),
        softmax_scale: 0.125,
        is_causal: 1,
        window_left: -1,
        window_right: -1,
        deterministic: (backward && attr_value(spec, "deterministic") == Some(1)) as i32,
        ..Default::default()
    };
    let (b, n, s) = (buffers.as_ptr(), buffers.len(), &mut shape);
    // The totals, or a KV-cache call's pages.
    let (mut total_q, mut total_k) = (0, 0);
    let (tq, tk) = (&mut total_q, &mut total_k);
    let mut err = [0 as c_char; 1024];
    let (e, len) = (err.as_mut_ptr(), err.len());
    let status = unsafe {
        match (kvcache, varlen, backward) {
            (Some(paged), _, _) => {
                kernels::jfa_kvcache_fwd_shape_from_buffers(b, n, paged as i32, s, tq, tk, e, len)
            }
            (None, false, false) => kernels::jfa_fwd_shape_from_buffers(b, n, s, e, len),
            (None, false, true) => kernels::jfa_bwd_shape_from_buffers(b, n, s, e, len),
            (None, true, false) => {
                kernels::jfa_varlen_fwd_shape_from_buffers(b, n, s, tq, tk, e, len)
            }
            (None, true, true) => {
                kernels::jfa_varlen_bwd_shape_from_buffers(b, n, s, tq, tk, e, len)
            }
        }
    };
    assert_eq!(status, kernels::JFA_INVALID_ARGUMENT);
    unsafe { CStr::from_ptr(err.as_ptr()) }.to_str().unwrap().to_owned()
}

/// The shape the forward specs (fwd_spec, varlen_fwd_spec with its bounds as
/// seqlens) decode to.
fn spec_shape() -> AttentionShape {
    AttentionShape {
        batch: 2,
        seqlen_q: 128,
        seqlen_k: 256,
        num_heads: 4,
        num_heads_k: 2,
        head_dim: 128,
        dtype: kernels::JFA_BFLOAT16,
        softmax_scale: 0.125,
        is_causal: 1,
        window_left: -1,
        window_right: -1,
        softcap: 0.0,
        deterministic: 0,
    }
}

#[test]
fn fwd_launches_with_the_decoded_shape_pointers_and_stream() {
    let lib = Recorder::default();
    assert_eq!(run_fwd(&lib, &fwd_spec()), None);
    let launches = lib.launches.borrow();
    assert_eq!(launches.len(), 1);
    let expected = spec_shape();
    assert_eq!(
        launches[0],
        Launch {
            shape: expected,
            pointers: vec![Q, K, V, OUT, LSE],
            stream: STREAM,
            alibi: (0, 4), // no slopes: NULL
            dq_accum_elems: 0,
            varlen: None,
            kvcache: None,
            workspace: (0, 0),
        }
    );
}

/// A dense call that asks for 4096 bytes of scratch gets them from XLA's
/// allocator, launches with them, and frees them after the launch.
fn takes_scratch_and_frees_it(
    lib: &Recorder,
    run: fn(&Recorder, &Spec) -> Option<(i32, String)>,
    spec: &Spec,
) {
    ALLOCATED.with_borrow_mut(Vec::clear);
    FREED.with_borrow_mut(Vec::clear);
    assert_eq!(run(lib, spec), None);
    let [(size, alignment, addr)] = ALLOCATED.with_borrow(|a| a.clone())[..] else {
        panic!("one allocation expected");
    };
    assert_eq!((size, alignment), (4096, 16));
    assert_eq!(lib.launches.borrow()[0].workspace, (addr, 4096));
    assert_eq!(FREED.with_borrow(|f| f.clone()), vec![(4096, addr)]);
}

#[test]
fn fwd_takes_the_scratch_it_asks_for_from_xla_and_frees_it_after_the_launch() {
    takes_scratch_and_frees_it(
        &Recorder { fwd_workspace: 4096, ..Default::default() },
        run_fwd,
        &fwd_spec(),
    );
}

#[test]
fn bwd_takes_the_scratch_it_asks_for_from_xla_and_frees_it_after_the_launch() {
    takes_scratch_and_frees_it(
        &Recorder { bwd_workspace: 4096, ..Default::default() },
        run_bwd,
        &bwd_spec(),
    );
}

#[test]
fn fwd_runs_without_scratch_where_xla_has_none_to_give() {
    ALLOCATED.with_borrow_mut(Vec::clear);
    FREED.with_borrow_mut(Vec::clear);
    let lib = Recorder { fwd_workspace: FAKE_DEVICE_BYTES as i64 + 1, ..Default::default() };
    assert_eq!(run_fwd(&lib, &fwd_spec()), None);
    assert_eq!(lib.launches.borrow()[0].workspace, (0, 0));
    assert!(ALLOCATED.with_borrow(Vec::is_empty) && FREED.with_borrow(Vec::is_empty));
}

#[test]
fn fwd_runs_without_scratch_on_a_runtime_without_the_allocator() {
    ALLOCATED.with_borrow_mut(Vec::clear);
    let lib = Recorder { fwd_workspace: 4096, ..Default::default() };
    let mut api = fake_api();
    api.struct_size = std::mem::offset_of!(xla::Api, type_register); // up to XLA_FFI_Stream_Get
    let mut call = build_with_api(&fwd_spec(), api);
    assert_eq!(outcome(unsafe { fwd_with(&lib, &mut call.frame) }), None);
    assert_eq!(lib.launches.borrow()[0].workspace, (0, 0));
    assert!(ALLOCATED.with_borrow(Vec::is_empty));
}

#[test]
fn varlen_fwd_launches_with_the_bounds_cu_seqlens_and_totals() {
    let lib = Recorder::default();
    assert_eq!(run_varlen_fwd(&lib, &varlen_fwd_spec()), None);
    let launches = lib.launches.borrow();
    assert_eq!(launches.len(), 1);
    // The dense call's shape, with max_seqlen_q / max_seqlen_k as seqlens.
    let expected = spec_shape();
    assert_eq!(
        launches[0],
        Launch {
            shape: expected,
            pointers: vec![Q, K, V, OUT, LSE],
            stream: STREAM,
            alibi: (0, 4),
            dq_accum_elems: 0,
            varlen: Some(Packed {
                cu_seqlens: (CU_SEQLENS_Q, CU_SEQLENS_K),
                totals: (TOTAL_Q, TOTAL_K)
            }),
            kvcache: None,
            workspace: (0, 0),
        }
    );
}

#[test]
fn varlen_fwd_passes_every_option_and_the_bounds_as_given() {
    let lib = Recorder::default();
    let mut spec = varlen_fwd_spec();
    spec.attrs = varlen_attrs(options(0.5, false, 16, 0, 30.0), 96, 200);
    assert_eq!(run_varlen_fwd(&lib, &spec), None);
    let s = lib.launches.borrow()[0].shape;
    assert_eq!(
        (s.softmax_scale, s.is_causal, s.window_left, s.window_right, s.softcap),
        (0.5, 0, 16, 0, 30.0)
    );
    assert_eq!((s.seqlen_q, s.seqlen_k), (96, 200));
}

#[test]
fn varlen_bounds_are_checked_as_seqlens() {
    let lib = Recorder::default();
    let mut spec = varlen_fwd_spec();
    spec.attrs = varlen_attrs(options(0.125, true, -1, -1, 0.0), 0, 256);
    let expected = c_abi_message(&spec, false);
    assert_eq!(expected, "seqlen_q must be positive, got 0");
    assert_eq!(run_varlen_fwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    let mut spec = varlen_bwd_spec();
    spec.attrs = varlen_attrs(bwd_attrs(0.125, true, -1, -1, 0.0, false, false), 128, -3);
    let expected = c_abi_message(&spec, true);
    assert_eq!(expected, "seqlen_k must be positive, got -3");
    assert_eq!(run_varlen_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    assert!(lib.launches.borrow().is_empty());
}

#[test]
fn fwd_passes_every_option() {
    let lib = Recorder::default();
    let mut spec = fwd_spec();
    spec.attrs = options(0.5, false, 16, 0, 30.0);
    assert_eq!(run_fwd(&lib, &spec), None);
    let s = lib.launches.borrow()[0].shape;
    assert_eq!(
        (s.softmax_scale, s.is_causal, s.window_left, s.window_right, s.softcap),
        (0.5, 0, 16, 0, 30.0)
    );
}

#[test]
fn bwd_launches_with_the_decoded_shape_pointers_and_stream() {
    let lib = Recorder::default();
    assert_eq!(run_bwd(&lib, &bwd_spec()), None);
    let launches = lib.launches.borrow();
    assert_eq!(launches.len(), 1);
    assert_eq!((launches[0].shape.seqlen_k, launches[0].shape.num_heads_k), (256, 2));
    assert_eq!(
        launches[0].pointers,
        vec![DOUT, Q, K, V, OUT, LSE, DQ, DK, DV, DQ_ACCUM, SOFTMAX_D]
    );
    assert_eq!(launches[0].stream, STREAM);
    assert_eq!(launches[0].alibi, (0, 4));
    assert_eq!(launches[0].dq_accum_elems, bwd_spec().rets[3].dims[0]);
    assert_eq!(launches[0].shape.deterministic, 0);
    assert_eq!(launches[0].varlen, None);
    assert_eq!(launches[0].workspace, (0, 0)); // none asked for
}

#[test]
fn varlen_bwd_launches_with_the_bounds_cu_seqlens_and_totals() {
    let lib = Recorder::default();
    assert_eq!(run_varlen_bwd(&lib, &varlen_bwd_spec()), None);
    let launches = lib.launches.borrow();
    assert_eq!(launches.len(), 1);
    let s = launches[0].shape;
    assert_eq!((s.batch, s.seqlen_q, s.seqlen_k, s.num_heads, s.num_heads_k), (2, 128, 256, 4, 2));
    assert_eq!((s.softmax_scale, s.is_causal, s.deterministic), (0.125, 1, 0));
    assert_eq!(
        launches[0].pointers,
        vec![DOUT, Q, K, V, OUT, LSE, DQ, DK, DV, DQ_ACCUM, SOFTMAX_D]
    );
    assert_eq!(launches[0].stream, STREAM);
    assert_eq!(launches[0].alibi, (0, 4));
    assert_eq!(launches[0].dq_accum_elems, varlen_workspace().0);
    assert_eq!(
        launches[0].varlen,
        Some(Packed { cu_seqlens: (CU_SEQLENS_Q, CU_SEQLENS_K), totals: (TOTAL_Q, TOTAL_K) })
    );
}

/// kvcache_fwd_spec's shape (and paged_kvcache_fwd_spec's: not its seqlen_k).
fn kvcache_shape() -> AttentionShape {
    AttentionShape { batch: 2, seqlen_q: 128, num_heads: 4, head_dim: 128, ..Default::default() }
}

#[test]
fn kvcache_fwd_launches_with_the_lengths_splits_and_workspace() {
    let lib = Recorder::default();
    assert_eq!(run_kvcache_fwd(&lib, &kvcache_fwd_spec()), None);
    let launches = lib.launches.borrow();
    assert_eq!(launches.len(), 1);
    // The cache's capacity is seqlen_k; without a block table no pages.
    assert_eq!(
        launches[0],
        Launch {
            shape: spec_shape(),
            pointers: vec![Q, K, V, OUT, LSE],
            stream: STREAM,
            alibi: (0, 4),
            dq_accum_elems: 0,
            varlen: None,
            kvcache: Some(Cache {
                seqlens_k: SEQLENS_K,
                block_table: 0,
                pages: (0, 0),
                num_splits: NUM_SPLITS,
                workspace: (WORKSPACE, kvcache_workspace(&kvcache_shape(), NUM_SPLITS)),
            }),
            workspace: (0, 0),
        }
    );
}

#[test]
fn a_paged_kvcache_fwd_passes_the_block_table_and_its_pages() {
    let lib = Recorder::default();
    assert_eq!(run_kvcache_fwd(&lib, &paged_kvcache_fwd_spec()), None);
    let launches = lib.launches.borrow();
    // Batch from q, not from the caches' pages; capacity max_blocks * page size.
    let s = launches[0].shape;
    assert_eq!((s.batch, s.seqlen_q, s.seqlen_k, s.num_heads_k), (2, 128, 512, 2));
    assert_eq!(launches[0].pointers, vec![Q, K, V, OUT, LSE]);
    assert_eq!(
        launches[0].kvcache,
        Some(Cache {
            seqlens_k: SEQLENS_K,
            block_table: BLOCK_TABLE,
            pages: (MAX_BLOCKS_PER_SEQ, PAGE_BLOCK_SIZE),
            num_splits: NUM_SPLITS,
            workspace: (WORKSPACE, kvcache_workspace(&kvcache_shape(), NUM_SPLITS)),
        })
    );
}

#[test]
fn kvcache_fwd_passes_every_option_and_num_splits_as_given() {
    let lib = Recorder::default();
    let mut spec = kvcache_fwd_spec();
    // The C ABI's launch, not the handler, refuses a bad split count.
    spec.attrs = kvcache_attrs(fwd_attrs(0.5, false, 16, 0, 30.0, true), false, 200);
    assert_eq!(run_kvcache_fwd(&lib, &spec), None);
    let launches = lib.launches.borrow();
    let s = launches[0].shape;
    assert_eq!(
        (s.softmax_scale, s.is_causal, s.window_left, s.window_right, s.softcap, s.deterministic),
        (0.5, 0, 16, 0, 30.0, 0)
    );
    assert_eq!(launches[0].alibi, (ALIBI, 4));
    assert_eq!(launches[0].kvcache.as_ref().unwrap().num_splits, 200);
}

#[test]
fn kvcache_buffer_errors_are_the_c_abi_messages() {
    type Case = (&'static str, fn(&mut Spec), &'static str);
    let cases: [Case; 6] = [
        ("seqlens_k dtype", |s| s.args[3].dtype = xla::F32, "seqlens_k: "),
        ("seqlens_k length", |s| s.args[3].dims = vec![3], "seqlens_k: "),
        // Read or not, the block table is int32.
        ("block_table dtype", |s| s.args[4].dtype = xla::F32, "block_table: "),
        ("cache heads", |s| s.args[2].dims[2] = 4, "v: "),
        ("lse", |s| s.rets[1].dims = vec![2, 128, 4], "softmax_lse: "),
        ("workspace rank", |s| s.rets[2].dims = vec![1, 1], "workspace: "),
    ];
    for (what, edit, prefix) in cases {
        let lib = Recorder::default();
        let mut spec = kvcache_fwd_spec();
        edit(&mut spec);
        let expected = c_abi_message(&spec, false);
        assert!(expected.starts_with(prefix), "{what}: {expected}");
        assert_eq!(
            run_kvcache_fwd(&lib, &spec),
            Some((xla::ERROR_INVALID_ARGUMENT, expected)),
            "{what}"
        );
        assert!(lib.launches.borrow().is_empty(), "{what}");
    }
}

#[test]
fn has_block_table_decides_whether_the_block_table_is_checked() {
    // The contiguous call's [batch, 1] placeholder is no paged call's table.
    let lib = Recorder::default();
    let mut spec = paged_kvcache_fwd_spec();
    spec.args[4].dims = vec![3, MAX_BLOCKS_PER_SEQ];
    let expected = c_abi_message(&spec, false);
    assert!(expected.starts_with("block_table: expected shape (2, 2)"), "{expected}");
    assert_eq!(run_kvcache_fwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    // Unpaged, the same table is not read: any shape goes.
    spec = kvcache_fwd_spec();
    spec.args[4].dims = vec![3, MAX_BLOCKS_PER_SEQ];
    assert_eq!(run_kvcache_fwd(&lib, &spec), None);
    // And a paged cache read as a contiguous one is a batch of 3 entries.
    spec = paged_kvcache_fwd_spec();
    spec.attrs = kvcache_attrs(options(0.125, true, -1, -1, 0.0), false, NUM_SPLITS);
    let expected = c_abi_message(&spec, false);
    assert!(expected.starts_with("k: "), "{expected}");
    assert_eq!(run_kvcache_fwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    assert_eq!(lib.launches.borrow().len(), 1);
}

#[test]
fn kvcache_splits_and_workspace_are_the_headers() {
    let splits = |shape: &AttentionShape, num_splits: i32, num_sms: i32| unsafe {
        kernels::jfa_kvcache_num_splits(shape, num_splits, num_sms)
    };
    // One query of 16 heads against 4096 keys in blocks of 128: 32 blocks;
    // 16 splits of 2 blocks fill 256 of 132 SMs' 264 slots.
    let mut shape = AttentionShape {
        batch: 1,
        seqlen_q: 1,
        seqlen_k: 4096,
        num_heads: 16,
        head_dim: 128,
        ..Default::default()
    };
    assert_eq!(splits(&shape, 0, 132), 16);
    assert_eq!(splits(&shape, 5, 132), 5);
    // Per split an lse and a 128-float output row per (entry, head, query);
    // unsplit, no partials.
    assert_eq!(kvcache_workspace(&shape, 16), 16 * 16 + 16 * 16 * 128);
    assert_eq!(kvcache_workspace(&shape, 1), 1);
    // 64 entries * 16 heads fill the GPU already.
    shape.batch = 64;
    assert_eq!(splits(&shape, 0, 132), 1);
}

#[test]
fn every_handler_describes_its_args_then_rets_to_the_c_abi() {
    let cases: [(&str, Entry, Spec); 6] = [
        ("fwd", fwd_with, fwd_spec()),
        ("bwd", bwd_with, bwd_spec()),
        ("varlen_fwd", varlen_fwd_with, varlen_fwd_spec()),
        ("varlen_bwd", varlen_bwd_with, varlen_bwd_spec()),
        ("kvcache_fwd", kvcache_fwd_with, kvcache_fwd_spec()),
        ("paged kvcache_fwd", kvcache_fwd_with, paged_kvcache_fwd_spec()),
    ];
    for (what, handler, spec) in cases {
        let lib = Recorder::default();
        assert_eq!(run(handler, &lib, &spec), None, "{what}");
        let expected: Vec<Described> =
            spec.args.iter().chain(&spec.rets).map(|t| (t.dtype, t.dims.clone())).collect();
        assert_eq!(*lib.described.borrow(), expected, "{what}");
    }
}

#[test]
fn has_alibi_passes_the_slopes_with_a_batch_stride_of_num_heads() {
    let lib = Recorder::default();
    let mut spec = fwd_spec();
    spec.attrs = fwd_attrs(0.125, false, -1, -1, 0.0, true);
    assert_eq!(run_fwd(&lib, &spec), None);
    let mut spec = bwd_spec();
    spec.attrs = bwd_attrs(0.125, false, -1, -1, 0.0, true, false);
    assert_eq!(run_bwd(&lib, &spec), None);
    // The varlen calls' slopes come after cu_seqlens_q/k.
    let mut spec = varlen_fwd_spec();
    spec.attrs = varlen_attrs(fwd_attrs(0.125, false, -1, -1, 0.0, true), 128, 256);
    assert_eq!(run_varlen_fwd(&lib, &spec), None);
    let mut spec = varlen_bwd_spec();
    spec.attrs = varlen_attrs(bwd_attrs(0.125, false, -1, -1, 0.0, true, false), 128, 256);
    assert_eq!(run_varlen_bwd(&lib, &spec), None);
    // The KV-cache call's come after seqlens_k and block_table.
    let mut spec = paged_kvcache_fwd_spec();
    spec.attrs = kvcache_attrs(fwd_attrs(0.125, false, -1, -1, 0.0, true), true, NUM_SPLITS);
    assert_eq!(run_kvcache_fwd(&lib, &spec), None);
    let alibi: Vec<_> = lib.launches.borrow().iter().map(|l| l.alibi).collect();
    assert_eq!(alibi, vec![(ALIBI, 4); 5]);
}

#[test]
fn alibi_slopes_must_be_float32_batch_by_heads() {
    type Case = (&'static str, fn(&mut Spec), &'static str);
    let cases: [Case; 2] = [
        ("rank 1", |s| s.args[3].dims = vec![4], "alibi_slopes: expected shape (2, 4), got (4,)"),
        ("dtype", |s| s.args[3].dtype = xla::BF16, "alibi_slopes: expected dtype code 11, got 16"),
    ];
    for (what, edit, message) in cases {
        let lib = Recorder::default();
        let mut spec = fwd_spec();
        edit(&mut spec);
        assert_eq!(c_abi_message(&spec, false), message, "{what}");
        assert_eq!(
            run_fwd(&lib, &spec),
            Some((xla::ERROR_INVALID_ARGUMENT, message.into())),
            "{what}"
        );
        assert!(lib.launches.borrow().is_empty(), "{what}");
    }
    // The backward checks its slopes alike.
    let lib = Recorder::default();
    let mut spec = bwd_spec();
    spec.args[6].dims = vec![4];
    let message = "alibi_slopes: expected shape (2, 4), got (4,)";
    assert_eq!(run_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, message.into())));
}

#[test]
fn the_empty_slopes_placeholder_stands_for_none_and_is_refused_with_has_alibi() {
    let lib = Recorder::default();
    let mut spec = fwd_spec();
    spec.args[3].dims = vec![0];
    assert_eq!(run_fwd(&lib, &spec), None);
    assert_eq!(lib.launches.borrow()[0].alibi, (0, 4));
    spec.attrs = fwd_attrs(0.125, false, -1, -1, 0.0, true);
    let message =
        "alibi_slopes: has_alibi is set but the slopes are the empty placeholder, shape (0,)";
    assert_eq!(run_fwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, message.into())));
    let mut spec = bwd_spec();
    spec.args[6].dims = vec![0];
    spec.attrs = bwd_attrs(0.125, false, -1, -1, 0.0, true, false);
    assert_eq!(run_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, message.into())));
    assert_eq!(lib.launches.borrow().len(), 1);
}

#[test]
fn the_deterministic_backward_takes_whole_splits_of_dq_accum() {
    let split = dq_accum_split();
    let lib = Recorder::default();
    let mut spec = bwd_spec();
    spec.attrs = bwd_attrs(0.125, true, -1, -1, 0.0, false, true);
    spec.rets[3].dims = vec![3 * split];
    assert_eq!(run_bwd(&lib, &spec), None);
    {
        let launches = lib.launches.borrow();
        assert_eq!(launches[0].shape.deterministic, 1);
        assert_eq!(launches[0].dq_accum_elems, 3 * split);
    }
    spec.rets[3].dims = vec![3 * split + 1];
    let expected = format!(
        "dq_accum: the deterministic backward takes a whole number of splits of {split} \
         elements, got shape ({},)",
        3 * split + 1
    );
    assert_eq!(c_abi_message(&spec, true), expected);
    assert_eq!(run_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    // Without deterministic, dq_accum is exactly jfa_bwd_workspace_elems' size (one split or
    // the Hopper backward's scratch, whichever is larger).
    let whole = bwd_spec().rets[3].dims[0];
    spec.attrs = bwd_attrs(0.125, true, -1, -1, 0.0, false, false);
    spec.rets[3].dims = vec![3 * split];
    let expected = format!("dq_accum: expected shape ({whole},), got ({},)", 3 * split);
    assert_eq!(run_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    assert_eq!(lib.launches.borrow().len(), 1);
}

#[test]
fn the_deterministic_varlen_backward_takes_whole_splits_of_dq_accum() {
    let (split, _) = varlen_workspace();
    let deterministic = |on| varlen_attrs(bwd_attrs(0.125, true, -1, -1, 0.0, false, on), 128, 256);
    let lib = Recorder::default();
    let mut spec = varlen_bwd_spec();
    spec.attrs = deterministic(true);
    spec.rets[3].dims = vec![2 * split];
    assert_eq!(run_varlen_bwd(&lib, &spec), None);
    {
        let launches = lib.launches.borrow();
        assert_eq!(launches[0].shape.deterministic, 1);
        assert_eq!(launches[0].dq_accum_elems, 2 * split);
    }
    spec.rets[3].dims = vec![2 * split - 1];
    let expected = c_abi_message(&spec, true);
    assert!(expected.starts_with("dq_accum: the deterministic backward takes"), "{expected}");
    assert_eq!(run_varlen_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    spec.attrs = deterministic(false);
    spec.rets[3].dims = vec![2 * split];
    let expected = format!("dq_accum: expected shape ({split},), got ({},)", 2 * split);
    assert_eq!(c_abi_message(&spec, true), expected);
    assert_eq!(run_varlen_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    assert_eq!(lib.launches.borrow().len(), 1);
}

#[test]
fn varlen_workspace_sizes_are_the_headers() {
    // Per split: (total_q + 128 * batch) rows of num_heads * 128 floats
    // (head_dim 128 rounded up to 32); softmax_d: num_heads such rows.
    let rows = TOTAL_Q + 128 * 2;
    assert_eq!(varlen_workspace(), (rows * 4 * 128, 4 * rows));
    let shape = AttentionShape {
        batch: 2,
        num_heads: 4,
        head_dim: 72, // rounded up to 96
        deterministic: 1,
        ..Default::default()
    };
    let (mut dq_accum, mut softmax_d) = (0, 0);
    unsafe {
        kernels::jfa_varlen_bwd_workspace_elems(&shape, TOTAL_Q, 132, &mut dq_accum, &mut softmax_d)
    };
    // ceil(132 / (2 * 4)) = 17 splits.
    assert_eq!((dq_accum, softmax_d), (17 * rows * 4 * 96, 4 * rows));
}

#[test]
fn workspace_sizes_follow_the_sm_count_when_deterministic() {
    let split = dq_accum_split();
    let mut shape = AttentionShape {
        batch: 2,
        seqlen_q: 128,
        num_heads: 4,
        head_dim: 128,
        ..Default::default()
    };
    let elems = |shape: &AttentionShape, sms: i32| {
        let (mut dq_accum, mut softmax_d) = (0, 0);
        unsafe { kernels::jfa_bwd_workspace_elems(shape, sms, &mut dq_accum, &mut softmax_d) };
        (dq_accum, softmax_d)
    };
    // Not deterministic: the Hopper backward's scratch, which pads seqlen_q to 160 (the largest
    // of its 48-, 64- and 80-row blocks) and ends softmax_d with a counter per (batch, head), is
    // more than FlashAttention-2's (128 rows) here.
    assert_eq!(elems(&shape, 132), (2 * 4 * 160 * 128, 2 * 4 * (2 * 160 + 1)));
    shape.deterministic = 1;
    // Deterministic, FlashAttention-2's only: ceil(132 / (2 * 4)) = 17 splits; at least one.
    // softmax_d stays the larger of the two.
    let softmax_d = 2 * 4 * (2 * 160 + 1);
    assert_eq!(split, 2 * 128 * 4 * 128);
    assert_eq!(elems(&shape, 132), (17 * split, softmax_d));
    assert_eq!(elems(&shape, 8), (split, softmax_d));
    assert_eq!(elems(&shape, 0), (split, softmax_d));
}

#[test]
fn rank_3_q_fails_with_the_c_abi_message() {
    let lib = Recorder::default();
    let mut spec = fwd_spec();
    spec.args[0].dims = vec![2, 128, 512];
    let expected = c_abi_message(&spec, false);
    assert_eq!(
        expected,
        "q: expected rank 4 [batch, seq, heads, head_dim], got shape (2, 128, 512)"
    );
    assert_eq!(run_fwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    assert!(lib.launches.borrow().is_empty());
}

#[test]
fn fwd_buffer_errors_are_the_c_abi_messages() {
    type Case = (&'static str, fn(&mut Spec), &'static str);
    let cases: [Case; 4] = [
        (
            "lse dtype",
            |s| s.rets[1].dtype = xla::F16,
            "softmax_lse: expected dtype code 11, got 10",
        ),
        ("k dtype", |s| s.args[1].dtype = xla::F16, "k: expected dtype code 16, got 10"),
        (
            "out shape",
            |s| s.rets[0].dims[1] = 64,
            "out: expected shape (2, 128, 4, 128), got (2, 64, 4, 128)",
        ),
        (
            "q dtype",
            |s| s.args[0].dtype = xla::F32,
            "q: dtype must be float16 or bfloat16, got dtype code 11",
        ),
    ];
    for (what, edit, message) in cases {
        let lib = Recorder::default();
        let mut spec = fwd_spec();
        edit(&mut spec);
        assert_eq!(c_abi_message(&spec, false), message, "{what}");
        assert_eq!(
            run_fwd(&lib, &spec),
            Some((xla::ERROR_INVALID_ARGUMENT, message.into())),
            "{what}"
        );
        assert!(lib.launches.borrow().is_empty(), "{what}");
    }
}

#[test]
fn bwd_buffer_errors_are_the_c_abi_messages() {
    let lib = Recorder::default();
    let mut spec = bwd_spec();
    spec.rets[3].dims[0] += 1; // dq_accum one element too large
    let expected = c_abi_message(&spec, true);
    assert!(expected.starts_with("dq_accum: expected shape ("), "{expected}");
    assert_eq!(run_bwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected)));
    assert!(lib.launches.borrow().is_empty());
}

#[test]
fn varlen_buffer_errors_are_the_c_abi_messages() {
    type Case = (&'static str, fn(&mut Spec), &'static str);
    let fwd_cases: [Case; 5] = [
        ("q rank", |s| s.args[0].dims = vec![2, 100, 4, 128], "q: "),
        ("cu_seqlens_q dtype", |s| s.args[3].dtype = xla::F32, "cu_seqlens_q: "),
        ("cu_seqlens_k length", |s| s.args[4].dims = vec![4], "cu_seqlens_k: "),
        ("alibi for 3 sequences", |s| s.args[5].dims = vec![3, 4], "alibi_slopes: "),
        ("dense lse", |s| s.rets[1].dims = vec![2, 4, 100], "softmax_lse: "),
    ];
    for (what, edit, prefix) in fwd_cases {
        let lib = Recorder::default();
        let mut spec = varlen_fwd_spec();
        edit(&mut spec);
        let expected = c_abi_message(&spec, false);
        assert!(expected.starts_with(prefix), "{what}: {expected}");
        assert_eq!(
            run_varlen_fwd(&lib, &spec),
            Some((xla::ERROR_INVALID_ARGUMENT, expected)),
            "{what}"
        );
        assert!(lib.launches.borrow().is_empty(), "{what}");
    }
    let bwd_cases: [Case; 4] = [
        ("dout tokens", |s| s.args[0].dims[0] = TOTAL_K, "dout: "),
        ("cu_seqlens_k dtype", |s| s.args[7].dtype = xla::S32 + 1, "cu_seqlens_k: "),
        ("dk with k's heads", |s| s.rets[1].dims[1] = 2, "dk: "),
        ("softmax_d", |s| s.rets[4].dims[0] += 1, "softmax_d: "),
    ];
    for (what, edit, prefix) in bwd_cases {
        let lib = Recorder::default();
        let mut spec = varlen_bwd_spec();
        edit(&mut spec);
        let expected = c_abi_message(&spec, true);
        assert!(expected.starts_with(prefix), "{what}: {expected}");
        assert_eq!(
            run_varlen_bwd(&lib, &spec),
            Some((xla::ERROR_INVALID_ARGUMENT, expected)),
            "{what}"
        );
        assert!(lib.launches.borrow().is_empty(), "{what}");
    }
}

#[test]
fn option_errors_come_from_the_c_abi_shape_check() {
    let lib = Recorder::default();
    let mut spec = fwd_spec();
    spec.attrs = options(0.125, false, -2, -1, 0.0);
    let expected = "window sizes must be -1 (unbounded) or non-negative, got (-2, -1)";
    assert_eq!(run_fwd(&lib, &spec), Some((xla::ERROR_INVALID_ARGUMENT, expected.into())));
    spec.attrs = options(0.125, false, -1, -1, -1.0);
    assert_eq!(
        run_fwd(&lib, &spec),
        Some((xla::ERROR_INVALID_ARGUMENT, "softcap must be finite and >= 0".into()))
    );
}

#[test]
fn kernel_failures_map_to_xla_codes() {
    // jfa_status -> XLA_FFI_Error_Code, as in the C++ binding.
    let cases = [
        (kernels::JFA_INVALID_ARGUMENT, xla::ERROR_INVALID_ARGUMENT),
        (kernels::JFA_UNSUPPORTED, xla::ERROR_UNIMPLEMENTED),
        (3, xla::ERROR_INTERNAL), // JFA_CUDA_ERROR
        (4, xla::ERROR_INTERNAL), // JFA_INTERNAL
    ];
    for (status, code) in cases {
        let lib =
            Recorder { launch_failure: Some((status, "kernel said no")), ..Default::default() };
        assert_eq!(run_fwd(&lib, &fwd_spec()), Some((code, "kernel said no".into())));
        assert_eq!(run_bwd(&lib, &bwd_spec()), Some((code, "kernel said no".into())));
        assert_eq!(run_varlen_fwd(&lib, &varlen_fwd_spec()), Some((code, "kernel said no".into())));
        assert_eq!(run_varlen_bwd(&lib, &varlen_bwd_spec()), Some((code, "kernel said no".into())));
        let paged = paged_kvcache_fwd_spec();
        assert_eq!(run_kvcache_fwd(&lib, &paged), Some((code, "kernel said no".into())));
    }
}

#[test]
fn a_panic_becomes_an_internal_error() {
    let lib = Recorder { panic_on_launch: true, ..Default::default() };
    let (code, message) = run_fwd(&lib, &fwd_spec()).unwrap();
    assert_eq!(code, xla::ERROR_INTERNAL);
    assert_eq!(message, "jflash_attn_rust: panic in FFI handler: launch exploded");
}

#[test]
fn the_linked_library_is_the_ci_kernel_set_or_more() {
    // //cpp:flash_attn_kernels is linked whole (alwayslink): the weakly
    // referenced kernels must be there.
    assert_eq!(unsafe { kernels::jfa_abi_version() }, kernels::JFA_ABI_VERSION);
    assert_eq!(unsafe { kernels::jfa_has_kernel(kernels::JFA_BFLOAT16, 128) }, 1);
    // --//cpp:splitkv is on by default.
    assert_eq!(unsafe { kernels::jfa_has_kvcache_kernel(kernels::JFA_BFLOAT16, 128) }, 1);
    assert_eq!(unsafe { kernels::jfa_has_kvcache_kernel(7, 128) }, 0); // not a jfa_dtype
    let config = unsafe { CStr::from_ptr(kernels::jfa_build_config()) }.to_str().unwrap();
    assert!(config.contains("bfloat16/128"), "{config}");
}

#[test]
fn no_launch_is_counted_without_one() {
    // The unit tests launch nothing (the Recorder stands in for the C ABI's
    // launches), so every count is zero; a null destination is ignored.
    let mut counts = kernels::LaunchCounts { fwd_cut: 7, bwd_cut: 7, uncut_for_scratch: 7 };
    unsafe { kernels::jfa_get_launch_counts(&mut counts) };
    assert_eq!((counts.fwd_cut, counts.bwd_cut, counts.uncut_for_scratch), (0, 0, 0));
    unsafe { kernels::jfa_get_launch_counts(std::ptr::null_mut()) };
}

#[test]
fn the_sm90_dispatch_rule_is_the_headers() {
    // jfa_fwd_uses_sm90 on the forward specs' shape: compute capability 9.0
    // only, never with ALiBi, softcap or packed sequences, and on 9.0 exactly
    // where the linked Hopper forward (the placeholder covers nothing) has the
    // dtype and head dim.
    let shape = spec_shape();
    let uses = |s: &AttentionShape, alibi: i32, varlen: i32, major: i32, minor: i32| unsafe {
        kernels::jfa_fwd_uses_sm90(s, alibi, varlen, major, minor)
    };
    let has = unsafe { kernels::jfa_has_sm90_kernel(kernels::JFA_BFLOAT16, 128) };
    assert!(has == 0 || has == 1, "{has}");
    assert_eq!(uses(&shape, 0, 0, 9, 0), has);
    for (major, minor) in [(8, 0), (8, 6), (8, 9), (9, 1), (10, 0), (12, 0)] {
        assert_eq!(uses(&shape, 0, 0, major, minor), 0, "cc {major}.{minor}");
    }
    assert_eq!(uses(&shape, 1, 0, 9, 0), 0, "ALiBi");
    assert_eq!(uses(&shape, 0, 1, 9, 0), 0, "varlen");
    assert_eq!(uses(&AttentionShape { softcap: 5.0, ..shape }, 0, 0, 9, 0), 0, "softcap");
    // Shapes jfa_check_shape refuses, and no shape at all.
    assert_eq!(uses(&AttentionShape { head_dim: 100, ..shape }, 0, 0, 9, 0), 0);
    assert_eq!(uses(&AttentionShape { num_heads_k: 3, ..shape }, 0, 0, 9, 0), 0);
    assert_eq!(unsafe { kernels::jfa_fwd_uses_sm90(std::ptr::null(), 0, 0, 9, 0) }, 0);
    assert_eq!(unsafe { kernels::jfa_has_sm90_kernel(7, 128) }, 0); // not a jfa_dtype
    assert_eq!(unsafe { kernels::jfa_has_sm90_kernel(kernels::JFA_BFLOAT16, 100) }, 0);
}

#[test]
fn num_sms_is_a_count_with_a_gpu_and_a_cuda_error_without() {
    let mut sms = -1;
    let mut err = [0 as c_char; 1024];
    let status = unsafe { kernels::jfa_num_sms(-1, &mut sms, err.as_mut_ptr(), err.len()) };
    let message = unsafe { CStr::from_ptr(err.as_ptr()) }.to_str().unwrap().to_owned();
    if status == kernels::JFA_OK {
        assert!(sms > 0, "{sms}");
    } else {
        assert_eq!(status, kernels::JFA_CUDA_ERROR, "{message}");
        assert!(message.contains("CUDA"), "{message}");
    }
    let status =
        unsafe { kernels::jfa_num_sms(-1, std::ptr::null_mut(), err.as_mut_ptr(), err.len()) };
    assert_eq!(status, kernels::JFA_INVALID_ARGUMENT);
}
