"""training_scripts/eval_checkpoints.sh (with --dry-run, and with a fake litgpt).

Also `sharded-mix eval-results` (sharded_mix.tools.eval_results).
"""

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sharded_mix.cli import main
from sharded_mix.tools.eval_results import EvalRow, checkpoint_order, collect, parse_results

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training_scripts" / "eval_checkpoints.sh"
TASKS = "arc_easy,asdiv,sciq,commonsense_qa,hellaswag,logiqa2,piqa,mmlu,mathqa"

LM_EVAL_RESULTS = {
    "results": {
        "arc_easy": {
            "alias": "arc_easy",
            "acc,none": 0.43,
            "acc_stderr,none": 0.0101,
            "acc_norm,none": 0.39,
            "acc_norm_stderr,none": 0.0100,
        },
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.02,
            "exact_match_stderr,strict-match": 0.004,
            "exact_match,flexible-extract": 0.03,
            "exact_match_stderr,flexible-extract": "N/A",
        },
        "mmlu": {"acc,none": 0.2514, "acc_stderr,none": 0.0037, "alias": "mmlu"},
        "mmlu_humanities": {"acc,none": 0.2591, "acc_stderr,none": 0.0064, "alias": " - humanities"},
        "mmlu_formal_logic": {"alias": "  - formal_logic", "acc,none": 0.2698, "acc_stderr,none": 0.0397},
    },
    "groups": {
        "mmlu": {"acc,none": 0.2514, "acc_stderr,none": 0.0037, "alias": "mmlu"},
        "mmlu_humanities": {"acc,none": 0.2591, "acc_stderr,none": 0.0064, "alias": " - humanities"},
    },
    "group_subtasks": {
        "mmlu_humanities": ["mmlu_formal_logic"],
        "mmlu": ["mmlu_humanities"],
        "arc_easy": [],
        "gsm8k": [],
    },
    "configs": {"arc_easy": {"task": "arc_easy", "num_fewshot": 5}},
    "versions": {"arc_easy": 1.0, "mmlu": 2, "mmlu_formal_logic": 1.0},
    "n-shot": {"arc_easy": 5, "mmlu_formal_logic": 5},
    "higher_is_better": {"arc_easy": {"acc": True, "acc_norm": True}},
    "n-samples": {"arc_easy": {"original": 2376, "effective": 2376}},
    "config": {"model": "hf", "batch_size": 16, "limit": None},
    "git_hash": None,
    "date": 1732530000.0,
}


def results_with_acc(acc: float) -> dict:
    results = copy.deepcopy(LM_EVAL_RESULTS)
    results["results"]["arc_easy"]["acc,none"] = acc
    return results


# --- eval_results: parsing -------------------------------------------------------------------------------------------


def test_parse_results_keeps_every_metric_subtasks_and_marks_groups():
    assert parse_results(LM_EVAL_RESULTS, "step-00002000") == [
        EvalRow("step-00002000", 2000, "arc_easy", "acc", 0.43, 0.0101, False),
        EvalRow("step-00002000", 2000, "arc_easy", "acc_norm", 0.39, 0.0100, False),
        EvalRow("step-00002000", 2000, "gsm8k", "exact_match/strict-match", 0.02, 0.004, False),
        EvalRow("step-00002000", 2000, "gsm8k", "exact_match/flexible-extract", 0.03, None, False),
        EvalRow("step-00002000", 2000, "mmlu", "acc", 0.2514, 0.0037, True),
        EvalRow("step-00002000", 2000, "mmlu_humanities", "acc", 0.2591, 0.0064, True),
        EvalRow("step-00002000", 2000, "mmlu_formal_logic", "acc", 0.2698, 0.0397, False),
    ]


def test_parse_results_adds_groups_found_only_under_groups_and_skips_missing_metrics():
    results = {
        "results": {
            "piqa": {"alias": "piqa", "acc,none": 0.6},  # no stderr
            "sciq": {"alias": "sciq"},  # no metric at all
            "logiqa2": {"alias": "logiqa2", "acc,none": "N/A", "acc_stderr,none": "N/A", "sample_len": 1572},
        },
        "groups": {"mmlu": {"alias": "mmlu", "acc,none": 0.25, "acc_stderr,none": 0.004}},
    }
    assert parse_results(results, "final") == [
        EvalRow("final", None, "piqa", "acc", 0.6, None, False),
        EvalRow("final", None, "mmlu", "acc", 0.25, 0.004, True),
    ]


def test_parse_results_rejects_a_file_without_results():
    with pytest.raises(ValueError, match="no 'results' mapping"):
        parse_results({"config": {}}, "final")


def test_checkpoints_sort_by_step_with_final_last():
    names = ["final", "step-00010000", "custom", "step-00002000", "step-00000500"]
    assert sorted(names, key=checkpoint_order) == ["step-00000500", "step-00002000", "step-00010000", "custom", "final"]


# --- eval_results: collecting an eval dir ----------------------------------------------------------------------------


def write_results(eval_dir: Path, name: str, results) -> Path:
    path = eval_dir / name / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(results if isinstance(results, str) else json.dumps(results))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_main_writes_one_csv_sorted_by_step_with_final_last(tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    write_results(eval_dir, "final", results_with_acc(0.6))
    write_results(eval_dir, "step-00010000", results_with_acc(0.5))
    write_results(eval_dir, "step-00002000", results_with_acc(0.4))
    (eval_dir / "plots").mkdir()  # not a checkpoint: ignored

    assert main(["eval-results", str(eval_dir)]) == 0
    out_csv = eval_dir / "results.csv"
    text = out_csv.read_text()
    assert text.splitlines()[:3] == [
        "checkpoint,step,task,metric,value,stderr,is_group",
        "step-00002000,2000,arc_easy,acc,0.4,0.0101,false",
        "step-00002000,2000,arc_easy,acc_norm,0.39,0.01,false",
    ]
    rows = read_csv(out_csv)
    assert len(rows) == 3 * 7
    arc = [
        (row["checkpoint"], row["step"], row["value"])
        for row in rows
        if (row["task"], row["metric"]) == ("arc_easy", "acc")
    ]
    assert arc == [("step-00002000", "2000", "0.4"), ("step-00010000", "10000", "0.5"), ("final", "", "0.6")]
    assert {row["task"] for row in rows if row["is_group"] == "true"} == {"mmlu", "mmlu_humanities"}
    assert [row["stderr"] for row in rows if row["metric"] == "exact_match/flexible-extract"] == ["", "", ""]
    assert capsys.readouterr().out == f"wrote 21 rows for 3 checkpoint(s) to {out_csv}\n"


def test_missing_or_broken_results_are_named_and_the_others_still_collected(tmp_path, capsys):
    eval_dir = tmp_path / "eval"
    write_results(eval_dir, "step-00002000", results_with_acc(0.4))
    broken = write_results(eval_dir, "step-00003000", '{"results": {"arc_easy": ')
    not_lm_eval = write_results(eval_dir, "step-00004000", ["not", "a", "mapping"])
    (eval_dir / "step-00005000" / "model").mkdir(parents=True)  # converted, never evaluated
    empty = write_results(eval_dir, "final", {"results": {"arc_easy": {"alias": "arc_easy"}}})

    rows, problems = collect(eval_dir)
    assert {row.checkpoint for row in rows} == {"step-00002000"}
    assert len(problems) == 4
    assert problems[0].startswith(f"{broken}: unreadable (")
    assert problems[1] == (
        f"{not_lm_eval}: not an lm-eval results file (no 'results' mapping); "
        "delete it and run eval_checkpoints.sh again"
    )
    assert problems[2] == (
        f"{eval_dir / 'step-00005000' / 'results.json'}: missing; the evaluation of this checkpoint did not finish "
        "(run eval_checkpoints.sh again)"
    )
    assert problems[3] == f"{empty}: holds no metrics; delete it and run eval_checkpoints.sh again"

    out_csv = tmp_path / "out" / "all.csv"
    assert main(["eval-results", str(eval_dir), "--csv", str(out_csv)]) == 1
    assert {row["checkpoint"] for row in read_csv(out_csv)} == {"step-00002000"}
    captured = capsys.readouterr()
    assert captured.err.count("error: ") == 4 and f"error: {broken}: unreadable" in captured.err
    assert captured.out == f"wrote 7 rows for 1 checkpoint(s) to {out_csv}; 4 checkpoint(s) left out (see above)\n"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda path: None, "is not a directory; give the --eval-dir of eval_checkpoints.sh"),
        (lambda path: path.mkdir(), "has no step-* or final directories; run eval_checkpoints.sh first"),
    ],
)
def test_main_on_a_missing_or_empty_eval_dir_exits_2(tmp_path, capsys, make, message):
    eval_dir = tmp_path / "eval"
    make(eval_dir)
    assert main(["eval-results", str(eval_dir)]) == 2
    assert message in capsys.readouterr().err
    assert not (eval_dir / "results.csv").exists()


# --- the script ------------------------------------------------------------------------------------------------------

FAKE_LITGPT = '''#!{python}
"""A fake litgpt: records its arguments; converts by copying; evaluates by writing canned lm-eval results."""
import json, os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_LITGPT_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[0] == "convert_pretrained_checkpoint":
    source, output = Path(args[1]), Path(args[2])
    if output.exists():
        sys.exit(f"FileExistsError: The output folder exists and is not empty: {{output}}")
    output.mkdir(parents=True)
    shutil.copy(source / "lit_model.pth", output / "lit_model.pth")
elif args[0] == "evaluate":
    model = Path(args[1])
    if model.parent.name == os.environ.get("FAKE_LITGPT_FAIL"):
        sys.exit("CUDA out of memory")
    options = dict(zip(args[2::2], args[3::2]))
    Path(options["--out_dir"]).mkdir(parents=True, exist_ok=True)
    results = json.loads(os.environ["FAKE_LITGPT_RESULTS"])
    results["results"]["arc_easy"]["acc,none"] = float((model / "lit_model.pth").read_text())
    Path(options["--save_filepath"]).write_text(json.dumps(results))
'''


@pytest.fixture
def run_dir(tmp_path):
    """A run: step-00002000, step-00010000 and final with a checkpoint, step-00004000 without.

    A checkpoint's text is the fake's arc_easy acc.
    """
    run = tmp_path / "run"
    for name, acc in [("step-00002000", "0.3"), ("step-00010000", "0.4"), ("final", "0.5")]:
        (run / name).mkdir(parents=True)
        (run / name / "lit_model.pth").write_text(acc)
    (run / "step-00004000").mkdir()
    return run


@pytest.fixture
def script(tmp_path):
    """Runs the script in tmp_path with a fake `litgpt` first on PATH; returns (result, the litgpt calls made)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "litgpt").write_text(FAKE_LITGPT.format(python=sys.executable))
    (bin_dir / "litgpt").chmod(0o755)
    log = tmp_path / "litgpt_calls.txt"
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("SHARDED_MIX_", "SLURM_", "LITGPT"))
    }
    env.update(
        PATH=f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        FAKE_LITGPT_LOG=str(log),
        FAKE_LITGPT_RESULTS=json.dumps(LM_EVAL_RESULTS),
        PYTHONPATH=str(ROOT),
    )

    def run(*args, **extra_env):
        log.unlink(missing_ok=True)
        result = subprocess.run(
            ["bash", str(SCRIPT), *args],
            cwd=tmp_path,
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        return result, log.read_text().splitlines() if log.exists() else []

    return run


def files_under(path: Path) -> set[Path]:
    return {entry for entry in path.rglob("*")}


def commands(
    name: str, evaluate_options: str = f"--tasks {TASKS} --num_fewshot 5 --batch_size 16", eval_dir: str = "run/eval"
) -> list[str]:
    out = f"{eval_dir}/{name}"
    return [
        f"litgpt convert_pretrained_checkpoint run/{name} {out}/model.partial",
        f"mv {out}/model.partial {out}/model",
        f"litgpt evaluate {out}/model {evaluate_options} --out_dir {out} --save_filepath {out}/results.json "
        "--force_conversion true",
    ]


def test_dry_run_prints_the_commands_in_step_order_and_writes_nothing(script, run_dir, tmp_path):
    before = files_under(tmp_path)
    result, calls = script("run", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        *commands("step-00002000"),
        *commands("step-00010000"),
        *commands("final"),
        "python -m sharded_mix.cli eval-results run/eval --csv run/eval/results.csv",
    ]
    assert "skipping run/step-00004000: no lit_model.pth" in result.stderr
    assert calls == [] and files_under(tmp_path) == before


def test_dry_run_skips_evaluated_checkpoints_and_converted_models(script, run_dir):
    write_results(run_dir / "eval", "step-00002000", LM_EVAL_RESULTS)
    (run_dir / "eval" / "final" / "model").mkdir(parents=True)
    (run_dir / "eval" / "final" / "model" / "lit_model.pth").write_text("0.5")
    (run_dir / "eval" / "step-00010000" / "model.partial").mkdir(parents=True)  # a conversion that was killed
    result, _ = script("run", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "rm -rf run/eval/step-00010000/model.partial",
        *commands("step-00010000"),
        commands("final")[-1],
        "python -m sharded_mix.cli eval-results run/eval --csv run/eval/results.csv",
    ]
    assert "step-00002000: already evaluated (run/eval/step-00002000/results.json), skipping" in result.stderr


def test_dry_run_passes_the_options_through(script, run_dir):
    result, _ = script(
        "run",
        "--dry-run",
        "--tasks",
        "piqa,sciq",
        "--num-fewshot=0",
        "--batch-size",
        "auto:4",
        "--limit",
        "20",
        "--eval-dir",
        "evals/run one",
        "--csv",
        "all.csv",
        "--only",
        "10000,final",
        "--",
        "--dtype",
        "bfloat16",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0] == "litgpt convert_pretrained_checkpoint run/step-00010000 'evals/run one/step-00010000/model.partial'"
    )
    assert lines[2] == (
        "litgpt evaluate 'evals/run one/step-00010000/model' --tasks piqa,sciq --num_fewshot 0 --batch_size auto:4 "
        "--limit 20 --out_dir 'evals/run one/step-00010000' --save_filepath 'evals/run one/step-00010000/results.json' "
        "--force_conversion true --dtype bfloat16"
    )
    assert lines[3] == "litgpt convert_pretrained_checkpoint run/final 'evals/run one/final/model.partial'"
    assert len(lines) == 7 and lines[6] == "python -m sharded_mix.cli eval-results 'evals/run one' --csv all.csv"


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "missing RUN_DIR, the out_dir of a litgpt pretrain run"),
        (("nowhere",), "RUN_DIR nowhere is not a directory"),
        (
            ("run/step-00004000",),
            "run/step-00004000 has no checkpoints (no step-*/lit_model.pth, no final/lit_model.pth)",
        ),
        (("run", "--bogus"), "unknown option --bogus (see --help)"),
        (("run", "--tasks"), "--tasks needs a value"),
        (("run", "--num-fewshot", "five"), "--num-fewshot five must be a whole number"),
        (("run", "--batch-size", "0"), "--batch-size 0 must be a positive integer, auto or auto:N"),
        (("run", "--limit", "0"), "--limit 0 must be a positive number"),
        (
            ("run", "--only", "4000"),
            "--only 4000 matches no checkpoint of run (it has: step-00002000 step-00010000 final)",
        ),
        (("run", "other"), "one RUN_DIR only, got run and other"),
    ],
)
def test_bad_input_exits_2_with_its_message(script, run_dir, tmp_path, args, message):
    before = files_under(tmp_path)
    result, calls = script(*args)
    assert result.returncode == 2
    assert f"[sharded-mix eval] error: {message}" in result.stderr
    assert calls == [] and files_under(tmp_path) == before


def test_help_exits_0(script):
    result, _ = script("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: eval_checkpoints.sh RUN_DIR")


def test_a_sweep_evaluates_every_checkpoint_collects_the_csv_and_resumes(script, run_dir):
    result, calls = script("run", "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    evaluate = f"--tasks {TASKS} --num_fewshot 5 --batch_size 4"
    assert calls == [
        line.removeprefix("litgpt ")
        for name in ("step-00002000", "step-00010000", "final")
        for line in commands(name, evaluate)
        if line.startswith("litgpt")
    ]
    for name in ("step-00002000", "step-00010000", "final"):
        assert (run_dir / "eval" / name / "model" / "lit_model.pth").is_file()
        assert not (run_dir / "eval" / name / "model.partial").exists()
    rows = read_csv(run_dir / "eval" / "results.csv")
    arc = [
        (row["checkpoint"], row["step"], row["value"])
        for row in rows
        if (row["task"], row["metric"]) == ("arc_easy", "acc")
    ]
    assert arc == [("step-00002000", "2000", "0.3"), ("step-00010000", "10000", "0.4"), ("final", "", "0.5")]
    assert "wrote 21 rows for 3 checkpoint(s) to run/eval/results.csv" in result.stdout

    result, calls = script("run")
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert result.stderr.count("already evaluated") == 3
    assert read_csv(run_dir / "eval" / "results.csv") == rows


def test_a_failed_checkpoint_does_not_stop_the_sweep_and_is_retried_next_time(script, run_dir):
    result, calls = script("run", FAKE_LITGPT_FAIL="step-00010000")
    assert result.returncode == 1
    assert [call.split()[0] for call in calls] == ["convert_pretrained_checkpoint", "evaluate"] * 3
    assert "step-00010000: evaluation failed" in result.stderr
    assert "error: run/eval/step-00010000/results.json: missing" in result.stderr
    assert "failed: step-00010000 (the lines above say why); run the script again to retry them" in result.stderr
    assert {row["checkpoint"] for row in read_csv(run_dir / "eval" / "results.csv")} == {"step-00002000", "final"}

    result, calls = script("run")
    assert result.returncode == 0, result.stderr
    assert calls == [commands("step-00010000")[-1].removeprefix("litgpt ")]  # converted already: evaluated only
    assert [row["checkpoint"] for row in read_csv(run_dir / "eval" / "results.csv")][::7] == [
        "step-00002000",
        "step-00010000",
        "final",
    ]


def test_a_killed_conversion_is_redone(script, run_dir):
    leftover = run_dir / "eval" / "final" / "model.partial"
    leftover.mkdir(parents=True)
    (leftover / "lit_model.pth").write_text("half")
    result, _ = script("run", "--only", "final")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "eval" / "final" / "model" / "lit_model.pth").read_text() == "0.5"
    assert not leftover.exists()
