"""The benchmark script still runs against the current engine (a smoke run; its timings are not checked here)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_mixture.py"), "--quick", "--workers", "0", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    results = json.loads(out.read_text())
    assert results["throughput"]["0"]["ours"]["tokens"] > 0
