#!/usr/bin/env python3
"""Helper of benches/compare-llamacpp.sh (standard library only).

  compare_table.py measure --runs N [--warmup W] --out FILE -- CMD...
      Runs CMD W times untimed, then N times; writes the wall time of each timed run (exec to
      exit, time.perf_counter) and its peak resident set size (ru_maxrss of that child, from
      os.wait4) as JSON. Stops with CMD's stderr tail when CMD fails.

  compare_table.py table --results DIR --formats q4_0,q8_0 --threads 1,2 [--meta KEY=VALUE]...
                         [--markdown FILE]
      Reads DIR/{llamacpp,edgeinfer}-FMT.json (llama-bench -o json / infer bench --json) and the
      measure files, prints a markdown table (test x threads x format: edgeinfer, llama.cpp,
      ratio) with notes, and writes it to FILE too.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(cmd):
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").splitlines()[-20:]
            sys.exit(f"compare_table: {' '.join(cmd)} exited with {proc.returncode}:\n" + "\n".join(tail))
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    rss_kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return wall, rss_kib


def measure(args):
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        sys.exit("compare_table: measure needs a command after --")
    for _ in range(args.warmup):
        run_once(cmd)
    walls, rss = [], []
    for _ in range(args.runs):
        w, r = run_once(cmd)
        walls.append(w)
        rss.append(r)
    with open(args.out, "w") as f:
        json.dump(
            {
                "cmd": cmd,
                "wall_s": walls,
                "median_wall_s": statistics.median(walls),
                "maxrss_kib": rss,
                "max_maxrss_kib": max(rss),
            },
            f,
            indent=1,
        )


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def bench_record(records, n_prompt, n_gen, threads):
    for r in records or []:
        if r.get("n_prompt") == n_prompt and r.get("n_gen") == n_gen and r.get("n_threads") == threads:
            return r
    return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_ts(r):
    return f"{r['avg_ts']:.1f} ± {r['stddev_ts']:.1f}" if r else "—"


def ratio(ours, theirs):
    if ours is None or theirs is None or theirs == 0:
        return "—"
    return f"{ours / theirs:.2f}×"


def table(args):
    formats = [f for f in args.formats.split(",") if f]
    threads = [int(t) for t in args.threads.split(",") if t]
    res = args.results
    ours = {f: load(os.path.join(res, f"edgeinfer-{f}.json")) for f in formats}
    theirs = {f: load(os.path.join(res, f"llamacpp-{f}.json")) for f in formats}

    rows = []
    for test, n_prompt, n_gen in (("pp512", 512, 0), ("tg128", 0, 128)):
        for t in threads:
            for f in formats:
                a = bench_record(ours[f], n_prompt, n_gen, t)
                b = bench_record(theirs[f], n_prompt, n_gen, t)
                rows.append((f"{test} (t/s ↑)", t, f, fmt_ts(a), fmt_ts(b),
                             ratio(a and a["avg_ts"], b and b["avg_ts"])))
    for t in threads:
        for f in formats:
            a = load(os.path.join(res, f"ttft-edgeinfer-{f}-t{t}.json"))
            b = load(os.path.join(res, f"ttft-llamacpp-{f}-t{t}.json"))
            av = a and a["median_wall_s"] * 1e3
            bv = b and b["median_wall_s"] * 1e3
            rows.append(("TTFT from exec (ms ↓)", t, f, f"{av:.0f}" if a else "—", f"{bv:.0f}" if b else "—",
                         ratio(av, bv)))
    for t in threads:
        for f in formats:
            a = load(os.path.join(res, f"rss-edgeinfer-{f}-t{t}.json"))
            b = load(os.path.join(res, f"rss-llamacpp-{f}-t{t}.json"))
            av = a and a["max_maxrss_kib"] / 1024
            bv = b and b["max_maxrss_kib"] / 1024
            rows.append(("peak RSS, tg128 (MiB ↓)", t, f, f"{av:.0f}" if a else "—", f"{bv:.0f}" if b else "—",
                         ratio(av, bv)))

    head = ("test", "threads", "format", "edgeinfer", "llama.cpp", "edgeinfer / llama.cpp")
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: | --- | ---: | ---: | ---: |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]

    notes = [f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"]
    for f in formats:
        a = (ours[f] or [{}])[0]
        b = (theirs[f] or [{}])[0]
        notes.append(
            f"- {f}: edgeinfer ran {a.get('model_type', '?')} weights ({a.get('model_size', 0) / 2**20:.0f} MiB) "
            f"with kernels {a.get('kernels', '?')}; llama.cpp ran {b.get('model_type', '?')} "
            f"({b.get('model_size', 0) / 2**20:.0f} MiB), CPU backend {b.get('cpu_info', '?')}"
        )
    for kv in args.meta:
        k, _, v = kv.partition("=")
        notes.append(f"- {k}: {v}")
    notes.append("- ratio: edgeinfer / llama.cpp; above 1 is better for t/s, below 1 for ms and MiB")

    text = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    print(text, end="")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--runs", type=int, default=5)
    m.add_argument("--warmup", type=int, default=0)
    m.add_argument("--out", required=True)
    m.add_argument("cmd", nargs=argparse.REMAINDER)
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    t.add_argument("--formats", default="q4_0,q8_0")
    t.add_argument("--threads", default="1,2")
    t.add_argument("--meta", action="append", default=[])
    t.add_argument("--markdown")
    args = p.parse_args()
    if args.command == "measure":
        if args.runs < 1:
            sys.exit("compare_table: --runs must be at least 1")
        measure(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
