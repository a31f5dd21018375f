#!/usr/bin/env python3
"""README's GPU table from one device.sh run: `readme_table.py ours.jsonl torch.json` (the
`bench` and `torch` phases' outputs). % of copy = our Rust copy of the same bytes / time."""
import json
import sys

ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
torch = {(t["op"], t["dtype"], t["rows"], t["hidden"]): t for t in json.load(open(sys.argv[2]))}


def pct(copy, us):
    return f"{us:.1f} ({100 * copy / us:.0f}%)" if us else "-"


print("| op | dtype | rows x hidden | kernel us | kernel % of copy | API us/call (% of copy) | "
      "in place us/call (% of copy) | candle_nn us | torch F.rms_norm us (% of copy) | "
      "torch.compile us (% of copy) | copy us |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    t = torch.get((r["op"], r["dtype"], r["rows"], r["hidden"]), {})
    c = r["copy_us"]
    op = "fused" if r["op"].startswith("fused") else "rms_norm"
    eager = pct(c, t.get("eager")) if op == "rms_norm" else "-"
    comp = pct(c, t["compile"]) if t.get("compile") else ("not measured" if r["dtype"] != "bf16" else "-")
    nn = f"{r['candle_nn_us']:.1f}" if r.get("candle_nn_us") else "-"
    print(f"| {op} | {r['dtype']} | {r['rows']}x{r['hidden']} | {r['ours_us']:.1f} | "
          f"{100 * c / r['ours_us']:.1f}% | {pct(c, r['api_us'])} | {pct(c, r['api_inplace_us'])} | "
          f"{nn} | {eager} | {comp} | {c:.1f} |")
