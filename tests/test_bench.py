"""The benchmark (`python -m <package>.bench`) in its tiny configuration, on any machine."""

import datetime
import importlib
import json
import os
import sys
import time

import jax
import pytest

# head_dim 128 with bfloat16: the kernel every build compiles, so that on a GPU
# our methods run their kernels rather than being skipped.
TINY = ["--seqlens", "64,128", "--total-tokens", "256", "--heads", "2", "--head-dim", "128",
        "--iters", "3", "--warmup", "1"]
FIELDS = {"method", "causal", "bwd", "seqlen", "batch", "ms", "min_ms", "max_ms", "tflops",
          "heads", "head_dim", "dtype", "ratio_to_best_peer"}


def load_bench(flash):
    return importlib.import_module(flash.__name__ + ".bench")


def own_label(flash):
    return f"{flash.__name__}-{flash.BINDING}"


def test_sweep_times_every_method_or_records_why_not(flash, tmp_path):
    bench = load_bench(flash)
    paths = {name: tmp_path / f"bench.{name}" for name in ("json", "md", "png")}
    records = bench.main(TINY + ["--json", str(paths["json"]), "--markdown", str(paths["md"]),
                                 "--plot", str(paths["png"])])

    assert json.loads(paths["json"].read_text()) == records
    methods, _ = bench.discover_methods()
    points = {(causal, bwd, seqlen) for causal in (False, True) for bwd in (False, True)
              for seqlen in (64, 128)}
    found = {(r["causal"], r["bwd"], r["seqlen"], r["method"]) for r in records}
    assert found == {point + (label,) for point in points for label in methods}
    assert len(records) == len(found)
    for r in records:
        assert FIELDS <= set(r), r
        assert (r["batch"], r["heads"], r["head_dim"], r["dtype"]) == (256 // r["seqlen"], 2, 128, "bfloat16")
        if r.get("skipped"):
            assert r["method"] != own_label(flash), r  # our flash_mha must run (kernel or CPU reference)
            assert r["tflops"] is None
        else:
            assert r["tflops"] > 0 and 0 < r["min_ms"] <= r["ms"] <= r["max_ms"], r
        if r["method"] in bench.OURS and r["tflops"] and len(methods) > 1:
            assert r["ratio_to_best_peer"] > 0, r
        else:
            assert r["ratio_to_best_peer"] is None, r

    markdown = paths["md"].read_text()
    for title in ("fwd, non-causal", "fwd+bwd, non-causal", "fwd, causal", "fwd+bwd, causal"):
        assert f"### {title}:" in markdown
    assert f"| {own_label(flash)} |" in markdown and "| 128 x 2 |" in markdown
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not paths["png"].exists()
    else:
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failing_method_is_recorded_as_skipped(flash, monkeypatch, tmp_path):
    bench = load_bench(flash)

    def broken(q, k, v, is_causal):
        raise ValueError("no kernel for this shape\nsecond line")

    methods = {own_label(flash): bench.einsum_attention, "attn-broken": broken}
    monkeypatch.setattr(bench, "discover_methods", lambda: (methods, {}))
    records = bench.main(TINY + ["--seqlens", "64", "--mode", "fwd", "--no-causal",
                                 "--markdown", str(tmp_path / "b.md")])

    by_method = {r["method"]: r for r in records}
    assert set(by_method) == set(methods)
    assert by_method["attn-broken"]["skipped"] == "ValueError: no kernel for this shape"
    assert by_method[own_label(flash)]["tflops"] > 0
    assert by_method[own_label(flash)]["ratio_to_best_peer"] is None  # no peer ran
    assert "| 64 x 4 |" in (tmp_path / "b.md").read_text()
    assert "skipped" in (tmp_path / "b.md").read_text()


def test_the_methods_samples_alternate(flash, monkeypatch):
    bench = load_bench(flash)
    build_step, sample_ms = bench.build_step, bench.sample_ms
    order = []

    def tagged_build(attention, is_causal, bwd):
        step = build_step(attention, is_causal, bwd)
        tagged = lambda *a: step(*a)
        tagged.attention = attention
        return tagged

    def logged_sample(step, *a):
        order.append(step.attention)
        return sample_ms(step, *a)

    first, second = bench.einsum_attention, lambda q, k, v, is_causal: bench.einsum_attention(q, k, v, is_causal)
    monkeypatch.setattr(bench, "discover_methods", lambda: ({own_label(flash): first, "attn-other": second}, {}))
    monkeypatch.setattr(bench, "build_step", tagged_build)
    monkeypatch.setattr(bench, "sample_ms", logged_sample)
    records = bench.main(TINY + ["--seqlens", "64", "--mode", "fwd", "--no-causal"])
    assert order == [first, second] * 3  # --iters 3
    assert all(r["tflops"] > 0 for r in records)


def test_methods_option_filters_by_label(flash):
    bench = load_bench(flash)
    records = bench.main(TINY + ["--seqlens", "64", "--mode", "fwdbwd", "--causal",
                                 "--methods", f"attn-einsum,{own_label(flash)}"])
    assert sorted(r["method"] for r in records) == sorted(["attn-einsum", own_label(flash)])
    assert all(r["bwd"] and r["causal"] for r in records)


def test_flops_follow_the_flash_attention_convention(flash):
    flops = load_bench(flash).attention_flops
    forward = 4 * 2 * 16 * 1024 ** 2 * 128
    assert flops(2, 1024, 16, 128, causal=False, bwd=False) == forward
    assert flops(2, 1024, 16, 128, causal=True, bwd=False) == forward / 2
    assert flops(2, 1024, 16, 128, causal=True, bwd=True) == 3.5 * forward / 2


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tiny defaults are CPU's")
def test_sizes_not_given_default_to_tiny_on_cpu(flash):
    parse = load_bench(flash).parse_args
    args = parse([])
    assert (args.seqlens, args.total_tokens, args.heads, args.head_dim, args.iters) == ([64, 128], 256, 2, 32, 3)
    assert (args.dtype, args.causal_values, args.bwd_values) == ("bfloat16", [False, True], [False, True])
    args = parse(["--heads", "4", "--dtype", "fp16", "--no-causal", "--mode", "fwd"])
    assert (args.heads, args.head_dim, args.dtype) == (4, 32, "float16")
    assert (args.causal_values, args.bwd_values) == ([False], [False])
    assert parse(["--causal"]).causal_values == [True]


def test_merge_takes_the_median_of_the_runs_medians(flash, tmp_path):
    bench = load_bench(flash)
    ours, peer, absent = own_label(flash), "jax-nn-xla", "fa3-jax"

    def record(method, ms, skipped=None):
        r = dict(method=method, causal=False, bwd=True, seqlen=128, batch=2, ms=ms,
                 min_ms=ms and 0.9 * ms, max_ms=ms and 1.1 * ms, tflops=ms and 1.0, heads=2,
                 head_dim=128, dtype="bfloat16", ratio_to_best_peer=None)
        return dict(r, skipped=skipped) if skipped else r

    runs = [[record(ours, 1.0), record(peer, 2.0), record(absent, None, "not importable")],
            [record(ours, 3.0), record(peer, None, "RESOURCE_EXHAUSTED"), record(absent, None, "x")],
            [record(ours, 2.0), record(peer, 4.0), record(absent, None, "x")]]
    paths = []
    for i, run in enumerate(runs):
        paths.append(str(tmp_path / f"run{i}.json"))
        with open(paths[-1], "w") as f:
            json.dump(run, f)
    md = tmp_path / "merged.md"
    by_method = {r["method"]: r for r in bench.main(["--merge", *paths, "--markdown", str(md)])}

    mine, theirs = by_method[ours], by_method[peer]
    assert (mine["ms"], mine["runs"]) == (2.0, 3)
    assert (theirs["ms"], theirs["runs"]) == (3.0, 2)  # the run that skipped it does not count
    assert (mine["min_ms"], mine["max_ms"]) == pytest.approx((0.9, 3.3))
    flops = bench.attention_flops(2, 128, 2, 128, causal=False, bwd=True)
    assert mine["tflops"] == pytest.approx(flops / 2.0 / 1e9)  # from the FLOPs, not the runs' TFLOPS
    assert mine["ratio_to_best_peer"] == pytest.approx(1.5)
    assert by_method[absent]["tflops"] is None and by_method[absent]["skipped"] == "not importable"
    assert "1.50x" in md.read_text() and "skipped" in md.read_text()


FAKE_NVIDIA_SMI = """
import sys, time
assert "--query-gpu=timestamp,clocks.sm,power.draw" in sys.argv, sys.argv
while True:
    now = time.time()
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    print(f"{stamp}, 1755, 690.50", flush=True)
    print(f"{stamp}, [N/A], [N/A]", flush=True)  # a reading nvidia-smi cannot give: ignored
    time.sleep(0.001)
"""


def test_gpu_clocks_are_nvidia_smis_readings_during_each_methods_samples(flash, monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!{sys.executable}" + FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    bench = load_bench(flash)
    run, md = tmp_path / "run.json", tmp_path / "run.md"
    records = bench.main(TINY + ["--seqlens", "64", "--mode", "fwd", "--no-causal", "--gpu-clocks",
                                 "--json", str(run), "--markdown", str(md)])
    # Readings carry the stand-in's timestamps, so a busy interpreter cannot move them out
    # of the windows they were taken in: every timed method has some, all the stand-in's.
    timed = [r for r in records if r["ms"]]
    assert timed and all((r["sm_mhz"], r["power_w"]) == (1755, 690.5) for r in timed)
    assert "SM clock (MHz) / board power (W)" in md.read_text() and "1755 / 690" in md.read_text()
    merged = bench.main(["--merge", str(run), str(run)])
    assert all(r["sm_mhz"] == 1755 for r in merged if r["ms"])


def test_gpu_clocks_take_each_readings_time_from_nvidia_smi(flash):
    bench = load_bench(flash)
    line = "2026/12/06 21:16:36.632, 1545, 689.91\n"  # the format of the H100's nvidia-smi
    taken, mhz, watts = bench.GpuClocks.parse(line)
    wall = datetime.datetime(2026, 12, 6, 21, 16, 36, 632000).timestamp()
    assert taken == pytest.approx(wall - (time.time() - time.perf_counter()), abs=1e-3)
    assert (mhz, watts) == (1545.0, 689.91)
    for bad in ["2026/12/06 21:16:36.632, [N/A], [N/A]", "1545, 689.91", "", "[N/A], 1545, 689.91"]:
        assert bench.GpuClocks.parse(bad) is None, bad


def test_gpu_clocks_are_the_medians_of_the_readings_inside_the_windows(flash, monkeypatch):
    bench = load_bench(flash)
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    clocks = bench.GpuClocks()
    clocks.readings = [(0.5, 1000.0, 100.0), (1.0, 1500.0, 500.0), (2.5, 1600.0, 650.0),
                       (3.5, 1700.0, 700.0), (4.0, 1900.0, 600.0), (9.0, 1980.0, 300.0)]
    assert clocks.during([(1.0, 2.0), (3.0, 4.0)]) == (1700.0, 600.0)  # ends included
    assert clocks.during([(2.0, 3.0)]) == (1600.0, 650.0)
    assert clocks.during([(5.0, 8.0)]) is None and clocks.during([]) is None


def test_gpu_clocks_without_nvidia_smi_are_a_note(flash, monkeypatch, capsys):
    bench = load_bench(flash)
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    records = bench.main(TINY + ["--seqlens", "64", "--mode", "fwd", "--no-causal", "--gpu-clocks"])
    assert "note: no clock readings: nvidia-smi is not on PATH" in capsys.readouterr().out
    assert records and all(r["sm_mhz"] is None for r in records)
    assert all(r["tflops"] for r in records if not r.get("skipped"))
