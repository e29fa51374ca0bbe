"""The benchmark scripts still run against the current engine (smoke runs; their timings are not checked here)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_throughput_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "throughput.json"
    run_benchmark("bench_throughput.py", "--quick", "--workers", "0", "--json", str(out))
    results = json.loads(out.read_text())
    assert results["throughput"]["0"]["ours"]["tokens"] > 0
    assert results["data"]["memmap_blocks_verified"] > 0


def test_first_batch_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "first_batch.json"
    run_benchmark("bench_first_batch.py", "--quick", "--workers", "0", "--repeats", "1", "--json", str(out))
    results = json.loads(out.read_text())
    row = results["first_batch"]["0"]
    assert row["fresh_s"] > 0 and row["resumed_s"] > 0 and results["resumed_state"]["max_blend_drift"] < 1


def test_scale_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "scale.json"
    run_benchmark(
        "bench_scale.py", "--quick", "--workers", "0", "--data-dir", str(tmp_path / "data"), "--json", str(out)
    )
    results = json.loads(out.read_text())
    assert list(results["scales"]) == ["1B", "10B"]
    crossing = results["scales"]["10B"]["crossing"]
    assert crossing["crossing_batch"] is not None and crossing["chunks"] == 120
    assert results["scales"]["10B"]["fresh"]["0"]["rss_main_mib"] > 0


def test_startup_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "startup.json"
    run_benchmark("bench_startup.py", "--quick", "--repeats", "1", "--json", str(out))
    results = json.loads(out.read_text())
    assert results["startup"]["200"]["shards"] == 200


def test_remote_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "remote.json"
    run_benchmark("bench_remote.py", "--quick", "--data-dir", str(tmp_path / "data"), "--json", str(out))
    row = json.loads(out.read_text())["rows"]["0"]
    assert row["warm"]["tokens_per_s"] > 0 and 0 < row["cold"]["downloaded_bytes"] <= row["total_bytes"]


def test_node_share_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "nodes.json"
    run_benchmark("bench_node_share.py", "--quick", "--data-dir", str(tmp_path / "data"), "--json", str(out))
    one, two = json.loads(out.read_text())["rows"]
    assert one["per_node"] == [one["total_bytes"]] and all(size < 0.75 * two["total_bytes"] for size in two["per_node"])


def test_prepare_benchmark_small_run_completes(tmp_path):
    out = tmp_path / "prepare.json"
    run_benchmark(
        "bench_prepare.py", "--tokens", "200000", "--small-files", "20", "--vocab-size", "2000", "--json", str(out)
    )
    rows = json.loads(out.read_text())["rows"]
    assert [row["case"] for row in rows] == ["one big JSONL", "20 small JSONL files"]
    assert all(row["tokens"] == rows[0]["tokens"] > 0 and row["tokens_per_s"] > 0 for row in rows)


def test_provenance_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "provenance.json"
    run_benchmark("bench_provenance.py", "--quick", "--data-dir", str(tmp_path / "data"), "--json", str(out))
    results = json.loads(out.read_text())
    assert results["queries"]["rows_per_step"] == 1024 and results["queries"]["out_dir_query_s"] > 0
    assert 0 < results["metrics"]["metrics_per_step_s"] < results["metrics"]["step_s"]
    assert results["queries"]["find_document"]["reads"] >= 1 and results["queries"]["c1_documents"] > 0


def test_integrity_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "integrity.json"
    run_benchmark("bench_integrity.py", "--quick", "--workers", "0", "--json", str(out))
    passes = json.loads(out.read_text())["workers"]["0"]
    assert set(passes) == {"local_first", "local_later", "remote_cold"}
    assert all(found["on_s"] > 0 and found["off_s"] > 0 for found in passes.values())


def test_sft_benchmark_small_run_completes(tmp_path):
    out = tmp_path / "sft.json"
    args = ["--sizes", "200,1000", "--num-workers", "0", "--repeats", "1", "--vocab-size", "2000"]
    args += ["--packed-steps", "4", "--packed-warmup", "1", "--packed-pairs", "1", "--packed-seq-length", "128"]
    run_benchmark("bench_sft.py", *args, "--data-dir", str(tmp_path / "data"), "--json", str(out))
    results = json.loads(out.read_text())
    assert set(results["cold"]) == {"200", "1000"} and all(row["tokens_per_s"] > 0 for row in results["cold"].values())
    warm = results["warm"]["1000/0"]
    assert warm["ours"]["total_s"] > 0 and warm["json"]["total_s"] > 0 and warm["ours"]["rss_mib"] > 0
    packed = results["packed"]
    assert packed["padded_tokens_s"] > 0 and packed["packed_tokens_s"] > 0 and packed["packed_padding"] < 0.5


def test_document_attention_benchmark_quick_run_completes(tmp_path):
    out = tmp_path / "document_attention.json"
    run_benchmark("bench_document_attention.py", "--quick", "--json", str(out))
    results = json.loads(out.read_text())
    assert results["causal_tokens_s"] > 0 and results["document_tokens_s"] > 0 and len(results["pairs"]) == 1
