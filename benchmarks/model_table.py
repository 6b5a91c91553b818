"""Regenerate the README model table: parameters (M) and GMACs at 224² for every model.

    python benchmarks/model_table.py            # print the table, write results/model_table.csv
    python benchmarks/model_table.py --readme   # also rewrite the table inside README.md

Top-1 numbers are the paper's ImageNet results (Tables 1-2); they are quoted, not re-measured.
"""

import argparse
import csv
import re
from pathlib import Path

import torch

import pyg_vig
from pyg_vig.utils import count_macs, count_params

HERE = Path(__file__).resolve().parent
PAPER_TOP1 = {"vig_ti": 73.9, "vig_s": 80.4, "vig_b": 82.3, "pvig_ti": 78.2, "pvig_s": 82.1,
              "pvig_m": 83.1, "pvig_b": 83.7}
MODELS = ["vig_ti", "vig_s", "vig_b", "pvig_ti", "pvig_s", "pvig_m", "pvig_b"]
START, END = "<!-- model-table -->", "<!-- /model-table -->"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true", help="rewrite the table in README.md")
    ap.add_argument("--models", nargs="*", default=MODELS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.models:
        model = pyg_vig.create_model(name).eval()
        params = count_params(model) / 1e6
        macs = count_macs(model, (1, 3, 224, 224)) / 1e9
        rows.append(dict(model=name, params_m=round(params, 3), gmacs=round(macs, 2),
                         top1=PAPER_TOP1.get(name, "")))
        print(f"{name:10s} {params:8.3f} M  {macs:6.2f} GMACs", flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    with open(out / "model_table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| Model | Params (M) | MACs (G) at 224² | Top-1 (paper, %) | weights |",
             "|---|---|---|---|---|"]
    for r in rows:
        alias = r["model"] + "_224_gelu"
        lines.append(f"| `{r['model']}` (`{alias}`) | {r['params_m']:.3f} | {r['gmacs']:.2f} | "
                     f"{r['top1']} | official, `pretrained=True` |")
    table = "\n".join(lines)
    print(table)
    if args.readme:
        readme = HERE.parent / "README.md"
        text = readme.read_text()
        if START not in text or END not in text:
            raise SystemExit(f"README.md lacks the {START} ... {END} markers")
        text = re.sub(re.escape(START) + ".*?" + re.escape(END),
                      lambda _: f"{START}\n{table}\n{END}", text, flags=re.S)
        readme.write_text(text)
        print("README.md updated")


if __name__ == "__main__":
    main()
