"""Data-layer benchmark: `python benchmarks/bench_data.py` prints one table.

cold load  = archive -> tokenized tensors (empty cache; GloVe load included), in a fresh process
warm load  = the same call again, served from the cache, in another fresh process
Peak memory is each process's maximum resident set size. Targets (2-core machine): cold <= 30 s,
warm <= 3 s. Uses IMDB_PATH / data/ like everything else.
"""
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import helpers
from ex2 import runtime
cache = Path(sys.argv[1])
runtime.CACHE_DIR = cache
start = time.perf_counter()
data = helpers.load_imdb(verbose=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "coverage": data.coverage, "sizes": [len(data.train), len(data.val), len(data.test)],
                  "source": data.source}))
"""


def run(cache_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, cache_dir], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = run(cache_dir)
        warm = run(cache_dir)
    cov = cold["coverage"]
    rows = [
        ("cold load (archive -> tensors)", f"{cold['seconds']:.1f} s", "<= 30 s", cold["seconds"] <= 30),
        ("warm load (from cache)", f"{warm['seconds']:.2f} s", "<= 3 s", warm["seconds"] <= 3),
        ("peak memory, cold", f"{cold['peak_mib']:.0f} MiB", "", None),
        ("peak memory, warm", f"{warm['peak_mib']:.0f} MiB", "", None),
        ("GloVe coverage, first 100 tokens", f"{cov['kept']:.2%} of {cov['tokens_kept']:,}", "", None),
        ("GloVe coverage, all tokens", f"{cov['all']:.2%} of {cov['tokens_all']:,}", "", None),
        ("train / val / test", " / ".join(f"{n:,}" for n in cold["sizes"]), "", None),
    ]
    print(f"source: {cold['source']}")
    print(f"| {'measure':34} | {'value':26} | {'target':7} | met |")
    print(f"|{'-' * 36}|{'-' * 28}|{'-' * 9}|-----|")
    for name, value, target, met in rows:
        mark = "" if met is None else ("yes" if met else "NO")
        print(f"| {name:34} | {value:26} | {target:7} | {mark:3} |")


if __name__ == "__main__":
    main()
