"""Print ``benchmarks/results/gbdt.json`` as the Markdown table of docs/benchmarks.md."""
import json
import os
import sys

from bench_gbdt import ratios_to_lightgbm

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = {"dartboost_mart": "dartboost MART", "dartboost_dart": "dartboost DART",
         "lightgbm_gbdt": "LightGBM gbdt", "lightgbm_dart": "LightGBM dart",
         "xgboost_hist": "XGBoost hist", "xgboost_dart": "XGBoost dart",
         "sklearn_hgb": "sklearn HGB"}


def main(path=os.path.join(HERE, "results", "gbdt.json")):
    with open(path) as fh:
        res = json.load(fh)
    print("| workload | library | fit s | fit ÷ LightGBM | predict 20k s | predict ÷ LightGBM "
          "| test metric | fit memory MB |")
    print("|---|---|---|---|---|---|---|---|")
    for w, libs in res["runs"].items():
        for lib, r in libs.items():
            fr, pr = ratios_to_lightgbm(libs, lib)
            print(f"| {w} | {NAMES.get(lib, lib)} | {r['fit_s']:.2f} | {fr} | "
                  f"{r['predict_20k_s']:.3f} | {pr} | {r['metric']} {r['value']:.4f} | "
                  f"{r.get('fit_extra_mb', float('nan')):.0f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
