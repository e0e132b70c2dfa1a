"""Times flash_mha against other JAX attention implementations.

    python -m jax_flash_attn.bench [--mode fwd|fwdbwd|both] [--causal [true|false|both]]
        [--seqlens 512,1024,...] [--total-tokens N] [--heads H] [--head-dim D]
        [--dtype bf16|fp16] [--iters N] [--methods LABEL,...]
        [--json PATH] [--markdown PATH] [--plot PATH] [--gpu-clocks]
    python -m jax_flash_attn.bench --merge RUN.json RUN.json ... [--json/--markdown/--plot PATH]

(`python -m jflash_attn.bench` likewise.) Each seqlen runs batch = total_tokens //
seqlen sequences. FLOPs follow FlashAttention's convention: forward is
4 * batch * heads * seqlen^2 * head_dim, halved when causal, and forward+backward
is 3.5x forward. Method labels (for --methods): jax_flash_attn-cpp and
jflash_attn-rust (ours), attn-einsum, attn-flax, jax-nn-xla, jax-nn-cudnn, fa2-jax
(flash_attn_jax), fa3-jax (flash_attn3_jax); those not importable are noted and
left out, and a method that fails at a point is recorded as skipped. Each point
reports the median over --iters samples; a sample enqueues enough calls back to
back to last about 20 ms (at most 400 calls), waits for the last, and divides by
their number. At each point the methods' samples alternate, one of each in turn
(until 2026-12-05 each method took all its samples before the next began). On
CPU, sizes not given default to a tiny configuration so CI runs the code path
(flash_mha then runs its pure-JAX reference). --merge times nothing: it
combines earlier runs' --json records, per point the median of their medians
(single points move by up to 10-30% between runs on a shared GPU). --gpu-clocks
also records the SM clock and board power that nvidia-smi reads while each
method's samples run (records' sm_mhz and power_w, the medians, and a table).
"""

import argparse
import datetime
import gc
import importlib
import json
import shutil
import statistics
import subprocess
import threading
import time

import jax
import jax.numpy as jnp

from . import _binding, flash_mha

PACKAGES = {"cpp": "jax_flash_attn", "rust": "jflash_attn"}
OURS = {f"{package}-{binding}" for binding, package in PACKAGES.items()}
PEERS = {"fa2-jax": "flash_attn_jax", "fa3-jax": "flash_attn3_jax"}
FULL_SIZES = dict(seqlens=[512, 1024, 2048, 4096, 8192, 16384], total_tokens=16384,
                  heads=16, head_dim=128, iters=20)
TINY_SIZES = dict(seqlens=[64, 128], total_tokens=256, heads=2, head_dim=32, iters=3)
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


def flash_style(fn):
    """Adapts a flash_mha(q, k, v, softmax_scale=None, is_causal=False, ...) function."""
    return lambda q, k, v, is_causal: fn(q, k, v, is_causal=is_causal)


def einsum_attention(q, k, v, is_causal):
    """Plain attention: einsum, softmax in float32, einsum."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * q.shape[-1] ** -0.5
    if is_causal:
        scores = jnp.where(causal_mask(q.shape[1]), scores, -jnp.inf)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1).astype(v.dtype), v)


def causal_mask(seqlen):
    return jnp.tril(jnp.ones((seqlen, seqlen), bool))


def flax_attention(q, k, v, is_causal):
    import flax.linen
    mask = causal_mask(q.shape[1])[None, None] if is_causal else None
    return flax.linen.dot_product_attention(q, k, v, mask=mask, deterministic=True)


def jax_nn_attention(implementation):
    return lambda q, k, v, is_causal: jax.nn.dot_product_attention(
        q, k, v, is_causal=is_causal, implementation=implementation)


def discover_methods():
    """({label: attention(q, k, v, is_causal)}, {label: why it is unavailable})."""
    methods, missing = {f"{_binding.PACKAGE}-{_binding.NAME}": flash_style(flash_mha)}, {}
    for binding, package in PACKAGES.items():
        if package != _binding.PACKAGE:
            try:
                other = importlib.import_module(package)
                methods[f"{package}-{other.BINDING}"] = flash_style(other.flash_mha)
            except Exception as e:  # not installed, or its extension fails to load
                missing[f"{package}-{binding}"] = f"{package} not importable ({e})"
    methods["attn-einsum"] = einsum_attention
    try:
        import flax.linen  # noqa: F401
        methods["attn-flax"] = flax_attention
    except ImportError as e:
        missing["attn-flax"] = f"flax not importable ({e})"
    methods["jax-nn-xla"] = jax_nn_attention("xla")
    if jax.default_backend() == "gpu":
        methods["jax-nn-cudnn"] = jax_nn_attention("cudnn")
    else:
        missing["jax-nn-cudnn"] = "cuDNN needs a GPU"
    for label, module in PEERS.items():
        try:
            methods[label] = flash_style(importlib.import_module(module).flash_mha)
        except Exception as e:  # not installed, or an API without flash_mha
            missing[label] = f"{module} not usable ({e})"
    return methods, missing


def attention_flops(batch, seqlen, heads, head_dim, causal, bwd):
    flops = 4 * batch * heads * seqlen ** 2 * head_dim / (2 if causal else 1)
    return flops * 3.5 if bwd else flops


def build_step(attention, is_causal, bwd):
    """A jitted step(q, k, v, cotangent): the output, or (dq, dk, dv) for fwd+bwd."""
    if not bwd:
        return jax.jit(lambda q, k, v, ct: attention(q, k, v, is_causal))

    def loss(q, k, v, ct):
        return jnp.sum(attention(q, k, v, is_causal).astype(jnp.float32) * ct.astype(jnp.float32))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def draw_inputs(key, shape, dtype, count):
    """count fresh (q, k, v) sets and one fixed cotangent, all on device."""
    keys = jax.random.split(key, 3 * count + 1)
    arrays = [jax.random.normal(key, shape, dtype) for key in keys]
    jax.block_until_ready(arrays)
    return [tuple(arrays[3 * i:3 * i + 3]) for i in range(count)], arrays[-1]


# A timed sample lasts at least this long: calls are enqueued back to back and
# waited on once, so that the latency of a blocking call (0.1-0.3 ms on top of
# the kernel through jit, and jittery) is spread over many calls instead of
# being counted whole against each, as a training loop that does not block
# sees it. (Until 2026-12-02 a sample lasted about 2 ms, so that wait was 5-15%
# of a short call's sample, and calls from 2 ms up were timed one by one.)
MIN_SAMPLE_MS = 20.0
MAX_CALLS_PER_SAMPLE = 400


def prepare(step, input_sets, cotangent, warmup):
    """Compiles and warms up step; returns how many calls a sample of it enqueues."""
    for i in range(max(warmup, 1)):  # the first call compiles
        jax.block_until_ready(step(*input_sets[i % len(input_sets)], cotangent))
    start = time.perf_counter()
    jax.block_until_ready(step(*input_sets[0], cotangent))
    single_ms = (time.perf_counter() - start) * 1e3
    return max(1, min(MAX_CALLS_PER_SAMPLE, int(MIN_SAMPLE_MS / max(single_ms, 1e-3)) + 1))


def sample_ms(step, input_sets, cotangent, calls, i):
    """Milliseconds per call of sample i: calls back to back (rotating over the input
    sets) and one wait on the device."""
    start = time.perf_counter()
    for c in range(calls):
        # One device runs its calls in order: waiting for the last waits for
        # all, and the earlier outputs are freed as they are dropped.
        out = step(*input_sets[(i * calls + c) % len(input_sets)], cotangent)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) * 1e3 / calls


class GpuClocks:
    """The first GPU's SM clock (MHz) and board power (W), read by nvidia-smi every
    interval_ms in the background, so that a method's readings are those taken during its
    samples: whether a card under sustained load runs at a lower clock (its power limit) than
    short bursts of calls get, and how machines of one kind differ there, then shows beside
    the times (docs/hopper-notes.md, sixteenth session). Each reading carries nvidia-smi's own
    timestamp: stamped when the reader thread got the interpreter instead, a busy interpreter
    moved readings out of the windows they were taken in (the eighteenth session's suite)."""

    QUERY = ["--query-gpu=timestamp,clocks.sm,power.draw", "--format=csv,noheader,nounits", "--id=0"]
    STAMP = "%Y/%m/%d %H:%M:%S.%f"  # local time, to the millisecond: "2026/12/06 21:16:36.632"

    def __init__(self, interval_ms=50):
        self.readings = []  # (time.perf_counter(), MHz, W)
        self.missing = None
        command = shutil.which("nvidia-smi")
        if command is None:
            self.missing = "nvidia-smi is not on PATH"
            return
        self._process = subprocess.Popen([command, *self.QUERY, f"--loop-ms={interval_ms}"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self._process.stdout:
            reading = self.parse(line)
            if reading:
                self.readings.append(reading)

    @classmethod
    def parse(cls, line):
        """(time.perf_counter() at the reading, MHz, W) of one line, or None ("[N/A]" and the like)."""
        try:
            stamp, mhz, watts = (x.strip() for x in line.split(","))
            taken = datetime.datetime.strptime(stamp, cls.STAMP).timestamp()
            mhz, watts = float(mhz), float(watts)
        except ValueError:
            return None
        return taken - (time.time() - time.perf_counter()), mhz, watts

    def during(self, windows):
        """(median MHz, median W) of the readings inside the (start, end) windows, or None."""
        got = [(mhz, watts) for t, mhz, watts in self.readings if any(a <= t <= b for a, b in windows)]
        if not got:
            return None
        return statistics.median(m for m, _ in got), statistics.median(w for _, w in got)

    def close(self):
        if self.missing is None:
            self._process.terminate()
            self._process.wait()
            self._reader.join(timeout=1)


def make_record(method, causal, bwd, seqlen, batch, args, times=None, flops=None, skipped=None):
    record = dict(method=method, causal=causal, bwd=bwd, seqlen=seqlen, batch=batch,
                  ms=None, min_ms=None, tflops=None, max_ms=None, heads=args.heads,
                  head_dim=args.head_dim, dtype=args.dtype, ratio_to_best_peer=None)
    if times:
        ms = statistics.median(times)
        record.update(ms=ms, min_ms=min(times), max_ms=max(times), tflops=flops / ms / 1e9)
    if skipped:
        record["skipped"] = skipped
    return record


def failure(e):
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def measure_point(methods, causal, bwd, input_sets, cotangent, args, clocks=None):
    """One point's records, one per method. The methods' samples alternate, one of each in
    turn, so that every method's median comes from the same stretch of the GPU's clock and
    power state (run one after the other, the two bindings, whose kernels are the same, differed
    by up to 3% at single points; docs/hopper-notes.md, tenth session). A method that fails
    (OOM, unsupported shape or dtype, ...) is recorded as skipped. With clocks (a GpuClocks),
    each timed record gets the SM clock and power read during its samples."""
    batch, seqlen = input_sets[0][0].shape[:2]
    flops = attention_flops(batch, seqlen, args.heads, args.head_dim, causal, bwd)
    steps, times, skipped, windows = {}, {}, {}, {}
    for label, attention in methods.items():
        try:
            step = build_step(attention, causal, bwd)
            steps[label] = step, prepare(step, input_sets, cotangent, args.warmup)
            times[label], windows[label] = [], []
        except Exception as e:
            skipped[label] = failure(e)
            gc.collect()  # what a failed attempt left on the device
    for i in range(args.iters):
        for label, (step, calls) in list(steps.items()):
            try:
                start = time.perf_counter()
                times[label].append(sample_ms(step, input_sets, cotangent, calls, i))
                windows[label].append((start, time.perf_counter()))
            except Exception as e:
                skipped[label] = failure(e)
                del steps[label]
                gc.collect()
    records = [make_record(label, causal, bwd, seqlen, batch, args, skipped=skipped[label]) if label in skipped
               else make_record(label, causal, bwd, seqlen, batch, args, times[label], flops) for label in methods]
    if clocks is not None:
        for r in records:
            read = clocks.during(windows.get(r["method"], [])) if r["ms"] else None
            r["sm_mhz"], r["power_w"] = read if read else (None, None)
    return records


def run_sweep(methods, args, clocks=None):
    """One record per (seqlen, causal, mode, method), printing each point's as it is measured."""
    records = []
    for seqlen in args.seqlens:
        shape = (max(1, args.total_tokens // seqlen), seqlen, args.heads, args.head_dim)
        input_sets, cotangent = draw_inputs(jax.random.key(seqlen), shape, args.dtype, args.input_sets)
        for causal in args.causal_values:
            for bwd in args.bwd_values:
                for r in measure_point(methods, causal, bwd, input_sets, cotangent, args, clocks):
                    result = f"{r['ms']:9.3f} ms {r['tflops']:8.4g} TFLOPS" if r["tflops"] else \
                        f"skipped: {r['skipped']}"
                    if r.get("sm_mhz"):
                        result += f" {r['sm_mhz']:5.0f} MHz {r['power_w']:4.0f} W"
                    print(f"  {panel_name(causal, bwd):19} seqlen {seqlen:6} {r['method']:20} {result}", flush=True)
                    records.append(r)
                gc.collect()
        del input_sets, cotangent
    add_peer_ratios(records)
    order = {label: i for i, label in enumerate(methods)}
    return sorted(records, key=lambda r: (r["causal"], r["bwd"], r["seqlen"], order[r["method"]]))


def merge_runs(runs):
    """One record per point of several runs' records (their --json lists), in the
    first run's order: ms the median of the runs' medians, min_ms and max_ms their
    extremes, runs how many timed it; skipped only where every run skipped it."""
    groups = {}
    for records in runs:
        for r in records:
            groups.setdefault((r["method"], r["causal"], r["bwd"], r["seqlen"]), []).append(r)
    merged = []
    for rs in groups.values():
        timed = [r for r in rs if r["ms"]]
        record = dict(rs[0], ms=None, min_ms=None, max_ms=None, tflops=None, ratio_to_best_peer=None,
                      runs=len(timed))
        if timed:
            record.pop("skipped", None)
            ms = statistics.median(r["ms"] for r in timed)
            flops = attention_flops(record["batch"], record["seqlen"], record["heads"], record["head_dim"],
                                    record["causal"], record["bwd"])
            record.update(ms=ms, min_ms=min(r["min_ms"] for r in timed),
                          max_ms=max(r["max_ms"] for r in timed), tflops=flops / ms / 1e9)
            for key in ("sm_mhz", "power_w"):
                read = [r[key] for r in timed if r.get(key)]
                if key in record:
                    record[key] = statistics.median(read) if read else None
        merged.append(record)
    add_peer_ratios(merged)
    return merged


def add_peer_ratios(records):
    """ratio_to_best_peer for our records: our TFLOPS over the best other method's at that point."""
    def point(r):
        return r["causal"], r["bwd"], r["seqlen"]
    best = {}
    for r in records:
        if r["method"] not in OURS and r["tflops"]:
            best[point(r)] = max(best.get(point(r), 0.0), r["tflops"])
    for r in records:
        if r["method"] in OURS and r["tflops"] and point(r) in best:
            r["ratio_to_best_peer"] = r["tflops"] / best[point(r)]


def panel_name(causal, bwd):
    return f"{'fwd+bwd' if bwd else 'fwd'}, {'causal' if causal else 'non-causal'}"


def panels(records):
    """The (causal, bwd) pairs present, and for each its records."""
    keys = sorted({(r["causal"], r["bwd"]) for r in records})
    return [(causal, bwd, [r for r in records if (r["causal"], r["bwd"]) == (causal, bwd)])
            for causal, bwd in keys]


def format_cell(record):
    if not record:
        return "-"
    if not record["tflops"]:
        return "skipped"
    cell = f"{record['tflops']:.4g} ({record['ms']:.3f})"
    return cell + (f" {record['ratio_to_best_peer']:.2f}x" if record["ratio_to_best_peer"] else "")


def format_clock_cell(record):
    if not record or not record.get("sm_mhz"):
        return "-"
    return f"{record['sm_mhz']:.0f} / {record['power_w']:.0f}"


def format_tables(records, markdown=False):
    """Per (mode, causal): one row per seqlen, one column per method, cells 'TFLOPS (ms)';
    where the records have clock readings (--gpu-clocks), a table of them follows."""
    tables = format_panels(records, markdown, "TFLOPS (median ms); Nx: ours / best peer", format_cell)
    if any(r.get("sm_mhz") for r in records):
        tables += "\n" + format_panels(records, markdown, "SM clock (MHz) / board power (W) while sampling, "
                                       "medians", format_clock_cell)
    return tables


def format_panels(records, markdown, what, cell):
    """Per (mode, causal): one row per seqlen, one column per method, cell(record) in each."""
    out = []
    for causal, bwd, rows in panels(records):
        labels = list(dict.fromkeys(r["method"] for r in rows))
        points = list(dict.fromkeys((r["seqlen"], r["batch"]) for r in rows))
        cells = {(r["seqlen"], r["method"]): r for r in rows}
        table = [["seqlen x batch"] + labels] + [
            [f"{s} x {b}"] + [cell(cells.get((s, label))) for label in labels] for s, b in points]
        title = f"{panel_name(causal, bwd)}: {what}"
        if markdown:
            out += [f"### {title}", "", "| " + " | ".join(table[0]) + " |",
                    "|" + "---|" * len(table[0])] + ["| " + " | ".join(row) + " |" for row in table[1:]]
        else:
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            out += [title] + ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
        out.append("")
    return "\n".join(out)


def plot_tflops(records, path, title=""):
    """TFLOPS vs seqlen per method, one panel per (mode, causal); False without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(f"note: matplotlib is not importable; not writing {path}")
        return False
    groups = panels(records)
    ncols = min(2, len(groups))
    nrows = -(-len(groups) // ncols)
    fig = Figure(figsize=(6.5 * ncols, 4.5 * nrows), layout="constrained")
    fig.suptitle(title.replace(": ", ":\n", 1), fontsize="small")
    for ax, (causal, bwd, rows) in zip(fig.subplots(nrows, ncols, squeeze=False).flat, groups):
        for label in dict.fromkeys(r["method"] for r in rows):
            points = [(r["seqlen"], r["tflops"]) for r in rows if r["method"] == label and r["tflops"]]
            if points:
                ours = label in OURS
                ax.plot(*zip(*points), marker="o", label=label, linewidth=2.5 if ours else 1.2,
                        linestyle="-" if ours else "--")
        seqlens = sorted({r["seqlen"] for r in rows})
        ax.set_xscale("log", base=2)
        ax.set_xticks(seqlens, [str(s) for s in seqlens])
        ax.minorticks_off()
        ax.set(title=panel_name(causal, bwd), xlabel="seqlen", ylabel="TFLOPS")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {_binding.PACKAGE}.bench",
                                description=__doc__.split("\n")[0])
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--seqlens", type=ints, help="comma-separated (default 512,...,16384; CPU 64,128)")
    p.add_argument("--total-tokens", type=int, help="batch * seqlen at every point (default 16384)")
    p.add_argument("--heads", type=int, help="default 16")
    p.add_argument("--head-dim", type=int, help="default 128")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--causal", nargs="?", const="true", default="both", choices=["true", "false", "both"])
    p.add_argument("--no-causal", dest="causal", action="store_const", const="false")
    p.add_argument("--mode", default="both", choices=["fwd", "fwdbwd", "both"])
    p.add_argument("--iters", type=int, help="timed runs per point; the median is reported (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first, compilation included")
    p.add_argument("--input-sets", type=int, default=3, help="fresh input sets the runs rotate over")
    p.add_argument("--methods", type=lambda s: [x for x in s.split(",") if x], help="labels to run")
    p.add_argument("--merge", nargs="+", metavar="RUN.json",
                   help="time nothing: combine these runs' --json records (median of medians)")
    p.add_argument("--json", help="write all records here")
    p.add_argument("--markdown", help="write the tables here as Markdown")
    p.add_argument("--plot", help="write a PNG of TFLOPS vs seqlen here (needs matplotlib)")
    p.add_argument("--gpu-clocks", action="store_true",
                   help="record the SM clock and board power nvidia-smi reads during each method's samples")
    args = p.parse_args(argv)
    for name, value in (TINY_SIZES if jax.default_backend() == "cpu" else FULL_SIZES).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.dtype = DTYPES[args.dtype]
    args.causal_values = {"false": [False], "true": [True], "both": [False, True]}[args.causal]
    args.bwd_values = {"fwd": [False], "fwdbwd": [True], "both": [False, True]}[args.mode]
    return args


def describe(args):
    device = jax.devices()[0]
    return (f"{_binding.PACKAGE} bench on {device.platform} ({device.device_kind}), jax {jax.__version__}: "
            f"heads {args.heads}, head_dim {args.head_dim}, {args.dtype}, {args.total_tokens} tokens "
            f"per point, median of {args.iters} samples of calls back to back (>= {MIN_SAMPLE_MS:g} ms a sample, "
            f"the methods' samples alternating) over {args.input_sets} input sets")


def main(argv=None):
    """Runs the sweep (or merges earlier runs); prints the tables, writes the outputs
    asked for; returns the records."""
    args = parse_args(argv)
    if args.merge:
        runs = []
        for path in args.merge:
            with open(path) as f:
                runs.append(json.load(f))
        records = merge_runs(runs)
        description = f"Per point the median of {len(runs)} runs' medians"
        print(description + "\n\n" + format_tables(records))
        return write_outputs(records, args, description)
    methods, missing = discover_methods()
    if args.methods:
        for label in set(args.methods) - set(methods) - set(missing):
            print(f"note: no method labelled {label!r}; known: {', '.join([*methods, *missing])}")
        methods = {k: v for k, v in methods.items() if k in args.methods}
        missing = {k: v for k, v in missing.items() if k in args.methods}
    for label, why in missing.items():
        print(f"note: not running {label}: {why}")
    print(describe(args), flush=True)
    clocks = GpuClocks() if args.gpu_clocks else None
    if clocks and clocks.missing:
        print(f"note: no clock readings: {clocks.missing}")
    try:
        records = run_sweep(methods, args, clocks)
    finally:
        if clocks:
            clocks.close()
    print("\n" + format_tables(records))
    return write_outputs(records, args, describe(args))


def write_outputs(records, args, description):
    """Writes the --json, --markdown and --plot outputs asked for; returns the records."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
        print(f"wrote {len(records)} records to {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"{description}.\n\n{format_tables(records, markdown=True)}")
        print(f"wrote {args.markdown}")
    if args.plot and plot_tflops(records, args.plot, description):
        print(f"wrote {args.plot}")
    return records


if __name__ == "__main__":
    main()
