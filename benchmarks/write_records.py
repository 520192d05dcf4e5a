"""Merge a GPU sitting's records into the repository: the "verified" families of benchmarks/sitting.py's
results.json (call1) go into vitfast/layers/dispatch_data/<gpu>.json, replacing that GPU kind's record of
each family they name and keeping the others (vitfast.verified reads them at import).

    python benchmarks/write_records.py <files_at>/results.json

A GPU kind without a data file gets one holding only its records (no dispatch rows: the library path
until tune.py has measured it). Prints each family's record before and after."""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vitfast.layers.dispatch import DATA_DIR, gpu_slug  # noqa: E402


def merge(results, data_dir=DATA_DIR):
    """Writes results' records into data_dir's file for its GPU; returns [(family, old commit, new commit)]."""
    env = results["environment"]
    if env.get("dry_run"):
        raise SystemExit("write_records.py: these are a dry run's results; they verify nothing")
    path = os.path.join(data_dir, gpu_slug(env["gpu"]) + ".json")
    data = {"gpu": env["gpu"], "ops": {}}
    if os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
    records = data.setdefault("verified", {})
    changes = [(family, records.get(family, {}).get("commit"), record["commit"])
               for family, record in sorted(results.get("verified", {}).items())]
    records.update(results.get("verified", {}))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return changes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="results.json of benchmarks/sitting.py call1")
    p.add_argument("--data-dir", default=DATA_DIR)
    args = p.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    changes = merge(results, args.data_dir)
    for family, old, new in changes:
        print(f"{family}: {'recorded at ' + old if old else 'no record'} -> recorded at {new}")
    failed = [f for f, v in results.get("families", {}).items() if not v["passed"]]
    if failed:
        print("not recorded (their tests did not all pass): " + ", ".join(failed))


if __name__ == "__main__":
    main()
