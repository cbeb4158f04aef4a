#!/usr/bin/env python3
"""Turns the JSON lines of strata-bench and torch_bench.py into compare.sh's table (or, with
CMP_JSON=1, into JSON lines: one object per workload, system and thread count with the medians,
and one per workload with the ratio of each system's best thread count). Standard library only.

    python3 bench/report.py RESULTS.jsonl      (environment: CMP_CPU, CMP_RUSTC, CMP_STRATA, ...)

Each line may name its "device" (absent: cpu), its GPU "adapter" and whether that adapter is a
software one ("software_adapter", strata's lines); the header prints them, a software adapter
labels the tables as showing correctness, not speed, and the CPU targets are left out on a GPU.

Each line may also name its "precision" (absent, as in older results: f32). The f32 lines make
the tables as before; bf16 lines (compare.sh --precision bf16: strata's bf16 autocast, PyTorch's
torch.autocast) add a "bf16 (autocast)" section: the same two tables for bf16, the per-thread
table with each system's bf16 ÷ f32 speed beside it.
"""

import json
import os
import statistics
import sys

# Target per workload: (kind, value). "ratio": strata/PyTorch throughput at each one's best
# thread count must be at least value; "latency": strata's best latency at most value µs.
TARGETS = {
    "W1": ("ratio", 2.5),
    "W2": ("ratio", 1.5),
    "W3": ("latency", 5.0),
    "W4": ("ratio", 1.0),
    "W5": ("ratio", 1.2),
    "W6": ("ratio", 1.2),
}
DESCRIPTIONS = {
    "W1": "SimpleNN train, batch 64",
    "W2": "SimpleNN train, batch 512",
    "W3": "SimpleNN inference, batch 1",
    "W4": "MLP 784-2048-2048-10 train, batch 256",
    "W5": "conv ResNet train, batch 128",
    "W6": "LSTM train, batch 64",
}
METRICS = ("samples_per_s", "latency_us", "gflop_s", "peak_rss_mb")
PRECISIONS = ("f32", "bf16")


def load(path):
    """(runs by precision, then (workload, system, threads); status by precision, then
    (workload, system); device by system)."""
    runs = {}
    status = {}
    devices = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            devices.setdefault(r["system"], {k: r[k] for k in ("device", "adapter", "software_adapter") if k in r})
            key = (r["workload"], r["system"], r["threads"])
            precision = r.get("precision", "f32")
            if "status" in r:
                status.setdefault(precision, {})[(r["workload"], r["system"])] = r["status"]
                continue
            runs.setdefault(precision, {}).setdefault(key, []).append(r)
    return runs, status, devices


def on_gpu(devices):
    """Whether any system ran on something other than the CPU."""
    return any(d.get("device", "cpu") != "cpu" for d in devices.values())


def software_label(devices):
    """The warning for a software adapter ("software Vulkan (llvmpipe): ..."), or None."""
    for d in devices.values():
        if d.get("software_adapter"):
            short = d.get("adapter", "software adapter").split(" (")[0]
            return f"software Vulkan ({short}): these figures show correctness, not speed"
    return None


def describe(devices, system, label):
    d = devices.get(system)
    if d is None:
        return None
    text = f"{label} on {d.get('device', 'cpu')}"
    if "adapter" in d:
        text += f", {d['adapter']}"
        if d.get("software_adapter"):
            text += " (software adapter)"
    return text


def medians(runs):
    out = {}
    for key, rs in runs.items():
        m = {"reps": len(rs)}
        for metric in METRICS:
            vals = [r[metric] for r in rs if metric in r]
            if vals:
                m[metric] = statistics.median(vals)
        out[key] = m
    return out


def best(med, workload, system):
    """(threads, medians) of the system's best thread count for the workload, or None."""
    cands = [(k[2], m) for k, m in med.items() if k[0] == workload and k[1] == system]
    if not cands:
        return None
    if workload == "W3":
        return min(cands, key=lambda c: c[1].get("latency_us", float("inf")))
    return max(cands, key=lambda c: c[1].get("samples_per_s", 0.0))


def summary(med, workload, gpu=False):
    s = best(med, workload, "strata")
    t = best(med, workload, "torch")
    kind, target = TARGETS[workload]
    out = {"workload": workload, "system": "comparison"}
    if s:
        out["strata_best_threads"] = s[0]
    if t:
        out["torch_best_threads"] = t[0]
    if s and t:
        if workload == "W3":
            out["strata_latency_us"] = s[1]["latency_us"]
            out["torch_latency_us"] = t[1]["latency_us"]
            out["ratio"] = t[1]["latency_us"] / s[1]["latency_us"]  # speed-up: >1 means strata is faster
        else:
            out["strata_samples_per_s"] = s[1]["samples_per_s"]
            out["torch_samples_per_s"] = t[1]["samples_per_s"]
            out["ratio"] = s[1]["samples_per_s"] / t[1]["samples_per_s"]
    if gpu:
        out["target"] = "CPU targets only"
    elif kind == "latency":
        out["target"] = f"<= {target} us"
        if s:
            out["met"] = s[1]["latency_us"] <= target
    else:
        out["target"] = f">= {target}x PyTorch"
        if "ratio" in out:
            out["met"] = out["ratio"] >= target
    return out


def speed(m, workload):
    """The speed of a median: samples/s, or for W3 calls/s (1 / latency); None when missing."""
    if workload == "W3":
        lat = m.get("latency_us")
        return 1e6 / lat if lat else None
    return m.get("samples_per_s")


def bf16_over_f32(meds, workload, system, threads):
    """The system's bf16 speed over its f32 speed at that thread count (medians), or None."""
    f = meds.get("f32", {}).get((workload, system, threads))
    b = meds.get("bf16", {}).get((workload, system, threads))
    if not f or not b:
        return None
    sf, sb = speed(f, workload), speed(b, workload)
    return sb / sf if sf and sb else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}{unit}"
    if v >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def print_runs(med, status, workloads, meds=None):
    """The table of every (workload, system, threads) median; with meds (the medians by
    precision), a last column with the bf16 ÷ f32 speed of that system at that thread count."""
    extra = f" {'bf16÷f32':>8} |" if meds is not None else ""
    head = f"| {'workload':<40} | {'system':<6} | {'threads':>7} | {'samples/s':>10} | {'latency':>9} | {'GFLOP/s':>7} | {'max RSS':>8} |" + extra
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for w in workloads:
        for system in ("strata", "torch"):
            if (w, system) in status:
                print(f"| {w + ' ' + DESCRIPTIONS.get(w, ''):<40} | {system:<6} | {'':>7} | {status[(w, system)]}")
                continue
            for (ww, ss, threads), m in sorted(med.items()):
                if ww != w or ss != system:
                    continue
                lat = fmt(m.get("latency_us"), " µs") if "latency_us" in m else "-"
                line = (
                    f"| {w + ' ' + DESCRIPTIONS.get(w, ''):<40} | {system:<6} | {threads:>7} "
                    f"| {fmt(m.get('samples_per_s')):>10} | {lat:>9} | {fmt(m.get('gflop_s')):>7} "
                    f"| {fmt(m.get('peak_rss_mb'), ' MB'):>8} |"
                )
                if meds is not None:
                    r = bf16_over_f32(meds, w, system, threads)
                    line += f" {(f'{r:.2f}x' if r is not None else '-'):>8} |"
                print(line)


def print_best(med, status, workloads, gpu, label, targets=True):
    """The table of each system at its best thread count, with the ratio (and the targets)."""
    if targets:
        print(f"| {'workload':<4} | {'strata (threads)':>20} | {'PyTorch (threads)':>20} | {'ratio':>6} | {'target':<16} | met |")
        print(f"|{'-' * 6}|{'-' * 22}|{'-' * 22}|{'-' * 8}|{'-' * 18}|-----|")
    else:
        print(f"| {'workload':<4} | {'strata (threads)':>20} | {'PyTorch (threads)':>20} | {'ratio':>6} |")
        print(f"|{'-' * 6}|{'-' * 22}|{'-' * 22}|{'-' * 8}|")
    for w in workloads:
        if any(k[0] == w for k in status):
            if targets:
                target = f">= {TARGETS[w][1]}x PyTorch"
                print(f"| {w:<4} | {'-':>20} | {'-':>20} | {'-':>6} | {target:<16} | not yet implemented |")
            else:
                print(f"| {w:<4} | {'-':>20} | {'-':>20} | {'-':>6} | not yet implemented |")
            continue
        s = summary(med, w, gpu)
        sb, tb = best(med, w, "strata"), best(med, w, "torch")
        key, unit = ("latency_us", " µs") if w == "W3" else ("samples_per_s", "/s")
        sv = f"{fmt(sb[1].get(key), unit)} ({sb[0]})" if sb else "-"
        tv = f"{fmt(tb[1].get(key), unit)} ({tb[0]})" if tb else "-"
        ratio = f"{s['ratio']:.2f}x" if "ratio" in s else "-"
        if targets:
            met = {True: "yes", False: "NO"}.get(s.get("met"), "-")
            print(f"| {w:<4} | {sv:>20} | {tv:>20} | {ratio:>6} | {s['target']:<16} | {met:<3} |")
        else:
            print(f"| {w:<4} | {sv:>20} | {tv:>20} | {ratio:>6} |")


def main():
    runs, status, devices = load(sys.argv[1])
    meds = {p: medians(rs) for p, rs in runs.items()}
    precisions = [p for p in PRECISIONS if p in meds or p in status] + sorted(
        p for p in set(meds) | set(status) if p not in PRECISIONS)
    if not precisions:
        precisions = ["f32"]
    env = os.environ.get
    gpu = on_gpu(devices)
    label = software_label(devices)
    bf16 = "bf16" in precisions
    if env("CMP_JSON") == "1":
        # Without bf16 lines, the JSON lines are the ones printed before --precision existed.
        tag = (lambda p: {"precision": p}) if precisions != ["f32"] else (lambda p: {})
        for p in precisions:
            med, st = meds.get(p, {}), status.get(p, {})
            for (w, system, threads), m in sorted(med.items()):
                info = {"device": "cpu", **devices.get(system, {})}
                extra = {}
                if bf16 and p == "bf16":
                    r = bf16_over_f32(meds, w, system, threads)
                    if r is not None:
                        extra["bf16_over_f32"] = r
                print(json.dumps({"workload": w, "system": system, **info, **tag(p), "threads": threads, **m, **extra}))
            for (w, system), s in sorted(st.items()):
                print(json.dumps({"workload": w, "system": system, **tag(p), "status": s}))
            for w in sorted({k[0] for k in med} | {k[0] for k in st}):
                if w not in {k[0] for k in st}:
                    s = summary(med, w, gpu)
                    if p != "f32":
                        s.pop("target", None)
                        s.pop("met", None)
                    s = {"workload": s.pop("workload"), "system": s.pop("system"), **tag(p), **s}
                    if label:
                        s["note"] = label
                    print(json.dumps(s))
        return
    print(f"CPU:      {env('CMP_CPU', '?')}")
    print(f"strata:   {env('CMP_STRATA', '?')}, {env('CMP_RUSTC', '?')}")
    torch = env("CMP_TORCH")
    note = env("CMP_TORCH_NOTE")
    if note:
        print(f"PyTorch:  {note}")
    else:
        print(f"PyTorch:  {torch + ' (eager), Python ' + env('CMP_PYTHON', '?') if torch else 'not found'}")
    where = [d for d in (describe(devices, "strata", "strata"), describe(devices, "torch", "PyTorch")) if d]
    print(f"device:   {'; '.join(where) if where else env('CMP_DEVICE', 'cpu')}")
    print(f"date:     {env('CMP_DATE', '?')}; medians of {env('CMP_REPS', '?')} repetitions, systems alternating")
    print()
    if label:
        print(f"** {label} **")
        print()
    for p in precisions:
        med, st = meds.get(p, {}), status.get(p, {})
        workloads = sorted({k[0] for k in med} | {k[0] for k in st})
        if p == "f32":
            if bf16:
                print("f32:")
                print()
            print_runs(med, st, workloads)
            print()
            print("Each system at its best thread count (ratio > 1: strata faster; W3's ratio is PyTorch's latency over strata's):")
            if label:
                print(f"** {label} **")
            print()
            print_best(med, st, workloads, gpu, label)
            continue
        print()
        if p == "bf16":
            print("bf16 (autocast): strata-bench --precision bf16 (bf16 products, f32 master weights) against PyTorch's")
            print('torch.autocast("cpu", dtype=torch.bfloat16) around forward and loss (backward and step outside).')
            print("bf16÷f32: that system's bf16 speed over its own f32 speed at that thread count, medians")
            print("(> 1: bf16 faster; W3 from latencies, f32 latency over bf16 latency).")
        else:
            print(f"{p}:")
        print()
        print_runs(med, st, workloads, meds if p == "bf16" else None)
        print()
        print(f"{p}: each system at its best thread count (ratio > 1: strata faster; W3's ratio is PyTorch's latency over strata's):")
        print()
        print_best(med, st, workloads, gpu, label, targets=False)


if __name__ == "__main__":
    main()
