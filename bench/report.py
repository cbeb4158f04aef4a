#!/usr/bin/env python3
"""Turns the JSON lines of strata-bench and torch_bench.py into compare.sh's table (or, with
CMP_JSON=1, into JSON lines: one object per workload, system and thread count with the medians,
and one per workload with the ratio of each system's best thread count). Standard library only.

    python3 bench/report.py RESULTS.jsonl      (environment: CMP_CPU, CMP_RUSTC, CMP_STRATA, ...)

Each line may name its "device" (absent: cpu), its GPU "adapter" and whether that adapter is a
software one ("software_adapter", strata's lines); the header prints them, a software adapter
labels the tables as showing correctness, not speed, and the CPU targets are left out on a GPU.
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


def load(path):
    """(runs by (workload, system, threads), status by (workload, system), device by system)."""
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
            if "status" in r:
                status[(r["workload"], r["system"])] = r["status"]
                continue
            runs.setdefault(key, []).append(r)
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


def fmt(v, unit=""):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}{unit}"
    if v >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def main():
    runs, status, devices = load(sys.argv[1])
    med = medians(runs)
    workloads = sorted({k[0] for k in med} | {k[0] for k in status})
    env = os.environ.get
    gpu = on_gpu(devices)
    label = software_label(devices)
    if env("CMP_JSON") == "1":
        for (w, system, threads), m in sorted(med.items()):
            info = {"device": "cpu", **devices.get(system, {})}
            print(json.dumps({"workload": w, "system": system, **info, "threads": threads, **m}))
        for (w, system), st in sorted(status.items()):
            print(json.dumps({"workload": w, "system": system, "status": st}))
        for w in workloads:
            if w not in {k[0] for k in status}:
                s = summary(med, w, gpu)
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
    head = f"| {'workload':<40} | {'system':<6} | {'threads':>7} | {'samples/s':>10} | {'latency':>9} | {'GFLOP/s':>7} | {'max RSS':>8} |"
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
                print(
                    f"| {w + ' ' + DESCRIPTIONS.get(w, ''):<40} | {system:<6} | {threads:>7} "
                    f"| {fmt(m.get('samples_per_s')):>10} | {lat:>9} | {fmt(m.get('gflop_s')):>7} "
                    f"| {fmt(m.get('peak_rss_mb'), ' MB'):>8} |"
                )
    print()
    print("Each system at its best thread count (ratio > 1: strata faster; W3's ratio is PyTorch's latency over strata's):")
    if label:
        print(f"** {label} **")
    print()
    print(f"| {'workload':<4} | {'strata (threads)':>20} | {'PyTorch (threads)':>20} | {'ratio':>6} | {'target':<16} | met |")
    print(f"|{'-' * 6}|{'-' * 22}|{'-' * 22}|{'-' * 8}|{'-' * 18}|-----|")
    for w in workloads:
        if any(k[0] == w for k in status):
            target = f">= {TARGETS[w][1]}x PyTorch"
            print(f"| {w:<4} | {'-':>20} | {'-':>20} | {'-':>6} | {target:<16} | not yet implemented |")
            continue
        s = summary(med, w, gpu)
        sb, tb = best(med, w, "strata"), best(med, w, "torch")
        key, unit = ("latency_us", " µs") if w == "W3" else ("samples_per_s", "/s")
        sv = f"{fmt(sb[1].get(key), unit)} ({sb[0]})" if sb else "-"
        tv = f"{fmt(tb[1].get(key), unit)} ({tb[0]})" if tb else "-"
        ratio = f"{s['ratio']:.2f}x" if "ratio" in s else "-"
        met = {True: "yes", False: "NO"}.get(s.get("met"), "-")
        print(f"| {w:<4} | {sv:>20} | {tv:>20} | {ratio:>6} | {s['target']:<16} | {met:<3} |")


if __name__ == "__main__":
    main()
