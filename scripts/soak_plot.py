"""Plots a soak run (scripts/soak): the server's RSS, open fds and connections over time.

    soak_plot.py SOAK.csv SOAK.json OUT.png

The CSV is hubcast-loadtest's sample series; the JSON its summary (warm-up, RSS
baseline and limit, verdict), drawn on the plot: the warm-up as a shaded span, the RSS
baseline with its allowed growth as a band.
"""

import csv
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(csv_path, json_path, png_path):
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{csv_path}: no samples")
    with open(json_path) as f:
        report = json.load(f)

    t = [float(r["t_s"]) / 60 for r in rows]
    col = lambda name: [int(r[name]) for r in rows]  # noqa: E731
    rss = [b / 2**20 for b in col("rss_bytes")]

    fig, (ax_rss, ax_conn, ax_events) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, constrained_layout=True
    )
    warmup = report["warmup_s"] / 60
    for ax in (ax_rss, ax_conn, ax_events):
        ax.axvspan(0, warmup, color="0.9", label="warm-up" if ax is ax_rss else None)
        ax.grid(True, alpha=0.3)

    ax_rss.plot(t, rss, color="tab:blue", label="server RSS")
    growth = report.get("rss")
    if growth:
        base, end = growth["baseline"] / 2**20, growth["end"] / 2**20
        limit = report["max_rss_growth"]
        after = [x for x in t if x >= warmup]
        w = growth["window"]
        ax_rss.axhspan(base, base * (1 + limit), color="tab:green", alpha=0.12,
                       label=f"allowed growth ({limit:.0%})")
        ax_rss.hlines(base, after[0], after[w - 1], color="tab:green", lw=2,
                      label="baseline: median of the first window after the warm-up")
        ax_rss.hlines(end, after[-w], after[-1], color="tab:red", lw=2,
                      label=f"end: median of the last window ({growth['growth']:+.1%})")
    ax_rss.set_ylabel("MiB")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend(loc="lower right")
    verdict = "PASS" if report["pass"] else "FAIL"
    counts = report["counts"]
    ax_rss.set_title(
        f"hubcast soak — {report['duration_s'] / 60:.0f} min, {verdict}: "
        f"{counts['connects']:,} connects, {counts['published']:,} messages, "
        f"{counts['start_missed'] + counts['gaps'] + counts['tail_missed']:,} missed"
    )

    ax_conn.plot(t, col("fds"), color="tab:orange", label="server open fds")
    ax_conn.plot(t, col("server_connections"), color="tab:purple",
                 label="server connections (/metrics)")
    ax_conn.plot(t, col("client_connections"), color="tab:gray", ls="--",
                 label="client connections (load generator)")
    ax_conn.set_ylim(bottom=0)
    ax_conn.legend(loc="lower right")

    def per_minute(name):
        v, out = col(name), [0]
        for i in range(1, len(v)):
            dt = (t[i] - t[i - 1]) or 1
            out.append((v[i] - v[i - 1]) / dt)
        return out

    ax_events.plot(t, per_minute("connects"), color="tab:blue", label="connects / min")
    ax_events.plot(t, per_minute("churned"), color="tab:cyan", label="clients left / min")
    ax_events.plot(t, per_minute("slow_consumer_closes"), color="tab:red",
                   label="slow-consumer closes / min")
    ax_events.plot(t, col("missed"), color="black", label="messages missed (total)")
    ax_events.set_yscale("symlog")
    ax_events.set_xlabel("minutes since the steady phase began")
    ax_events.legend(loc="lower right")

    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
