"""The benchmark that runs `litgpt pretrain` itself (its CPU smoke run; timings are not checked here)."""

import json

from scripts.test_benchmark_scripts import run_benchmark


def test_gpu_step_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu_step.json"
    run_benchmark("bench_gpu_step.py", "--quick", "--json", str(out))
    results = json.loads(out.read_text())
    assert results["steps"] == 12 and len(results["transitions"]) == 1 and results["epoch_ends"]
    assert 0 <= results["wait_fraction"] < 1 and results["p50_ms"] <= results["p999_ms"] <= results["max_ms"]
