"""Bench output: the comparisons against issue 6's goals, a readable table, the RTFx-vs-batch PNG.

Every ratio compares figures taken in the same run (and, for ours vs transformers, interleaved passes),
so CPU contention from other work largely cancels; absolute numbers do not enjoy that protection.
"""

from __future__ import annotations

from pathlib import Path

GOALS = {  # issue 6 item 3 (CPU) and item 4 (GPU)
    "ar_speedup_b8": 3.0,
    "ar_speedup_b1": 1.5,
    "nar_over_ar": 5.0,
    "encoder_pct_bf16_peak": 60.0,
    "2b_bf16_peak_rss_gb": 6.0,
    "gpu_2b_nar_b128_rtfx": 2500.0,
}


def _find(records, **kw) -> dict | None:
    for r in records:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _ar_speedups(records) -> list[dict]:
    out = []
    for r in records:
        if r["group"] != "ar_vs_transformers" or r["impl"] != "ours":
            continue
        key = {k: r[k] for k in ("group", "preset", "dtype", "batch")}
        ref = _find(records, impl="transformers", **key)
        goal = GOALS["ar_speedup_b8"] if r["batch"] >= 8 else GOALS["ar_speedup_b1"]
        ratio = ref["seconds_per_iter"] / r["seconds_per_iter"]
        name = f"AR ours / transformers, {r['preset']} {r['dtype']} B={r['batch']}"
        out.append(dict(name=name, value=ratio, goal=goal, met=ratio >= goal, unit="x"))
        before = _find(records, impl="ours-unfused", **key)
        if before is not None:
            name = f"fused projections: unfused / fused time, {r['preset']} {r['dtype']} B={r['batch']}"
            v = before["seconds_per_iter"] / r["seconds_per_iter"]
            out.append(dict(name=name, value=v, goal=None, met=None, unit="x"))
        for q in (x for x in records if x.get("impl", "").startswith("ours-int8") and _same(x, key)):
            # int8 weights against the reference in the bench dtype: the goal is stated for AR speed, and
            # int8 is our option, so it is scored here too, labelled with what it changes.
            v = ref["seconds_per_iter"] / q["seconds_per_iter"]
            name = f"AR {q['impl']} / transformers {r['dtype']}, {r['preset']} B={r['batch']}"
            out.append(dict(name=name, value=v, goal=goal, met=v >= goal, unit="x"))
    return out


def _same(record: dict, key: dict) -> bool:
    return all(record.get(k) == v for k, v in key.items())


def _mode_ratios(records) -> list[dict]:
    out = []
    for dtype in ("fp32", "bf16"):
        ars = [r for r in records if r["group"] == "modes" and r["dtype"] == dtype and r["mode"] == "ar"]
        for ar in ars:
            nar = _find(records, group="modes", dtype=dtype, mode="nar", batch=ar["batch"])
            if nar is not None:
                v = nar["rtfx"] / ar["rtfx"]
                name = f"NAR ({nar['preset']}) / AR ({ar['preset']}) RTFx, {dtype} B={ar['batch']}"
                out.append(
                    dict(
                        name=name, value=v, goal=GOALS["nar_over_ar"], met=v >= GOALS["nar_over_ar"], unit="x"
                    )
                )
            for mode in ("ctc", "speculative"):
                m = _find(
                    records, group="modes", dtype=dtype, mode=mode, preset=ar["preset"], batch=ar["batch"]
                )
                if m is not None:
                    name = f"{mode} / AR RTFx, {ar['preset']} {dtype} B={ar['batch']}"
                    out.append(dict(name=name, value=m["rtfx"] / ar["rtfx"], goal=None, met=None, unit="x"))
    return out


def summarize(records: list[dict], peaks: dict[str, float], device: str) -> list[dict]:
    out = _ar_speedups(records) + _mode_ratios(records)
    for r in records:
        if r["group"] == "encoder":
            pct = 100 * r["gflops"] / peaks[r["dtype"]]
            goal = GOALS["encoder_pct_bf16_peak"] if r["dtype"] == "bf16" else None
            name = f"encoder {r['preset']} {r['dtype']} B={r['batch']}: % of {r['dtype']} matmul peak"
            out.append(
                dict(name=name, value=pct, goal=goal, met=None if goal is None else pct >= goal, unit="%")
            )
    ar2b = _find(records, group="modes", preset="2b", dtype="bf16", mode="ar")
    if ar2b is not None and device == "cpu":
        gb = ar2b["peak_rss_mb"] / 1024
        goal = GOALS["2b_bf16_peak_rss_gb"]
        out.append(
            dict(name="2b bf16 peak RSS (AR engine pass)", value=gb, goal=goal, met=gb < goal, unit="GB")
        )
    nar = _find(records, group="modes", preset="2b-nar", mode="nar", batch=128)
    if nar is not None:
        goal = GOALS["gpu_2b_nar_b128_rtfx"]
        out.append(
            dict(name="2b-nar RTFx at B=128", value=nar["rtfx"], goal=goal, met=nar["rtfx"] >= goal, unit="")
        )
    q, base = _find(records, group="int8", dtype="int8"), _find(records, group="int8", dtype="fp32")
    if q and base:
        agree = q["token_agreement"]
        name = f"int8 / fp32 RTFx, {q['preset']} B={q['batch']} (token agreement {agree:.2f})"
        out.append(dict(name=name, value=q["rtfx"] / base["rtfx"], goal=None, met=None, unit="x"))
    return out


def _fmt(v, nd=1) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def table(records: list[dict], peaks: dict[str, float], summary: list[dict]) -> str:
    head = "| group | preset | dtype | impl/mode | B | RTFx | tokens/s | s/pass | GFLOP/s | % peak | peak RSS MB |"
    lines = [head, "|" + "---|" * 11]
    for r in records:
        gf = r.get("gflops")
        pct = 100 * gf / peaks[r["dtype"]] if gf and r["dtype"] in peaks else None
        lines.append(
            f"| {r['group']} | {r['preset']} | {r['dtype']} | {r.get('impl') or r.get('mode') or 'encoder'} "
            f"| {r['batch']} | {_fmt(r['rtfx'])} | {_fmt(r.get('tokens_per_s'))} | {_fmt(r['seconds_per_iter'], 3)} "
            f"| {_fmt(gf)} | {_fmt(pct)} | {_fmt(r['peak_rss_mb'], 0)} |"
        )
    lines += ["", "| comparison | value | goal | met |", "|---|---|---|---|"]
    for s in summary:
        goal = "" if s["goal"] is None else f"{s['goal']:g}{s['unit']}"
        met = "" if s["met"] is None else ("yes" if s["met"] else "**no**")
        lines.append(f"| {s['name']} | {s['value']:.2f}{s['unit']} | {goal} | {met} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> Path | None:
    """RTFx vs batch size per (preset, mode) of the scaling group; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r["group"] == "scaling":
            series.setdefault(f"{r['preset']} {r['mode']} ({r['dtype']})", []).append((r["batch"], r["rtfx"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="RTFx", title="RTFx vs batch size")
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
