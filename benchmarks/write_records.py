"""Merge a GPU sitting's records into the package: the "verified" records of benchmarks/sitting.py's
results.json go into vitfast/kernels/records/<gpu key>.json, replacing that key's record of each family
they name and keeping the others (vitfast.kernels.gate reads them at import).

    python benchmarks/write_records.py <files_at>/results.json

`python -m vitfast.check --gpu --record-into vitfast/kernels/records` writes the same files directly.
Prints each family's record before and after."""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vitfast.kernels import records  # noqa: E402


def merge(results, records_dir=records.SHIPPED_DIR):
    """Writes results' records into records_dir's file for its GPU key (one record per family, the
    package's rule); returns [(family, old commit, new commit)]."""
    env = results["environment"]
    if env.get("dry_run"):
        raise SystemExit("write_records.py: these are a dry run's results; they verify nothing")
    new = results.get("verified", [])
    if isinstance(new, dict):
        raise SystemExit("write_records.py: these results name GPUs, not GPU keys (a sitting before "
                         "vitfast.kernels.records); their fingerprints are not this build's either")
    old = {r["family"]: r.get("commit") for r in records.read(records_dir).get(env["key"], [])}
    records.write(records_dir, env["key"], new, keep=1)
    return [(r["family"], old.get(r["family"]), r.get("commit")) for r in sorted(new, key=lambda r: r["family"])]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="results.json of benchmarks/sitting.py call1 or short")
    p.add_argument("--records-dir", default=records.SHIPPED_DIR)
    args = p.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    for family, old, new in merge(results, args.records_dir):
        print(f"{family}: {'recorded at ' + old if old else 'no record'} -> recorded at {new}")
    failed = [f for f, v in results.get("families", {}).items() if not v["passed"]]
    if failed:
        print("not recorded (their tests did not all pass): " + ", ".join(failed))


if __name__ == "__main__":
    main()
