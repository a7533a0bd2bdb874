"""The robustness table (issue 12): the default run on prompt sets it was not tuned on.

Runs ``refusalkit run`` once per (prompt set, --n-train, --seed), one at a time (two torch jobs on
a small CPU slow each other far more than twofold), into ``--out/<set>-n<train>-s<seed>``, and
prints one Markdown row per run: the pick, its KL, its rank by score, removal and addition on the
test prompts with counts and intervals, and the verdict. A finished run directory is read, not run
again, so the table can be filled over several sessions.

    python benchmarks/robustness.py --sets builtin terse polite --n-train 48 128 --seeds 0 1 2

Prompt sets: ``builtin`` (the package's own), and every folder of ``benchmarks/prompt_sets`` with
``harmful.jsonl`` and ``harmless.jsonl`` (written for this project in other styles than the
built-ins: ``terse`` imperative requests, ``polite`` long context-rich ones, each with harmless
requests of another topic mix).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SETS_DIR = Path(__file__).parent / "prompt_sets"


def _set_options(name: str) -> list[str]:
    if name == "builtin":
        return []
    folder = SETS_DIR / name
    return [
        "--harmful",
        str(folder / "harmful.jsonl"),
        "--harmless",
        str(folder / "harmless.jsonl"),
    ]


def _rate(detail: dict[str, Any]) -> str:
    shift = detail["refusal_rate_shift"]
    low, high = shift["ci95"]
    return (
        f"{detail['baseline_refusal_count']}/{detail['n']} → {detail['intervention_refusal_count']}"
        f"/{detail['n']} ({shift['mean']:+.2f}, {low:+.2f}…{high:+.2f}); log-odds "
        f"{detail['log_odds_shift']['mean']:+.2f}"
    )


def row(name: str, n_train: int, seed: int, out: Path) -> str:
    summary = json.loads((out / "summary.json").read_text())
    selection, verdict = summary["selection"], summary["verdict"]
    details = verdict["details"]
    rank = selection.get("diagnostics", {}).get("rank", "–")
    return (
        f"| {name} | {n_train} | {seed} | {selection['position']}/{selection['layer']} | "
        f"{selection['kl']:.3f} | {rank} | {_rate(details['removal'])} | "
        f"{_rate(details['addition'])} | {verdict['removal']} / {verdict['addition']} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["builtin", "terse", "polite"])
    parser.add_argument("--n-train", nargs="+", type=int, default=[48, 128])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-val", type=int, default=24)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("refusalkit-runs/robustness"))
    parser.add_argument("extra", nargs="*", help="more options for refusalkit run (after --)")
    args = parser.parse_args()
    print("| prompts | n-train | seed | pick (pos/layer) | KL | rank | removal: harmful refusal "
          "| addition: harmless refusal | verdict |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        for n_train in args.n_train:
            for seed in args.seeds:
                out = args.out / f"{name}-n{n_train}-s{seed}"
                if not (out / "summary.json").is_file():
                    command = [
                        sys.executable, "-m", "refusalkit", "run", *_set_options(name),
                        "--n-train", str(n_train), "--n-val", str(args.n_val),
                        "--n-test", str(args.n_test), "--seed", str(seed), "--quiet",
                        "--out", str(out), *args.extra,
                    ]  # fmt: skip
                    result = subprocess.run(command, check=False)
                    if result.returncode not in (0, 3):
                        print(f"| {name} | {n_train} | {seed} | failed (exit {result.returncode}) "
                              "| | | | | |")  # fmt: skip
                        continue
                print(row(name, n_train, seed, out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
