"""`python -m peft_repro.rescore`: the Java metrics of a run decoded without Java, from the outputs its record keeps."""
import json
from pathlib import Path

from peft_repro import rescore
from peft_repro.results import load_records

from .conftest import needs_data, run_main


@needs_data("e2e")
def test_rescoring_a_record_without_the_java_metrics_gives_the_full_runs_scores(tmp_path: Path):
    out = run_main("+scale=smoke", "method=lora", "logger=none", "record_samples=1000", "zero_shot=false",
                   f"results_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr[-3000:]
    [full] = load_records(tmp_path, "adhoc", "smoke")
    assert set(full["test"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    [path] = (tmp_path / "runs" / "adhoc" / "smoke").glob("*.json")
    gpu_config = {**full["config"], "task": {**full["config"]["task"], "test_metrics": ["BLEU", "NIST"]}}
    partial = {**full, "config": gpu_config, "test": {k: full["test"][k] for k in ("BLEU", "NIST")}}  # no Java there
    path.write_text(json.dumps(partial))
    deferred = path.with_name("grid-point.json")  # an lr-grid point whose test waits: skipped in a folder
    deferred.write_text(json.dumps({**full, "test": None, "test_deferred": True}))
    scored = path.with_name("scored.json")  # a run scored on every metric where it ran: skipped in a folder
    scored.write_text(json.dumps({**full, "samples": full["samples"][:1]}))
    assert rescore.main([str(path.parent)]) == 0
    assert json.loads(deferred.read_text())["test"] is None and rescore.main([str(deferred)]) == 2
    assert json.loads(scored.read_text())["samples"] == full["samples"][:1]
    deferred.unlink(), scored.unlink()
    again = json.loads(path.read_text())
    assert again["test"] == full["test"] and again["rescored"]["metrics"] == sorted(full["test"])
    assert again["test_items"] == full["test_items"]
    assert rescore.main([str(path.parent)]) == 0 and json.loads(path.read_text()) == again  # rescored once

    cut = {**partial, "samples": full["samples"][:1]}  # a record that kept fewer outputs than its test items
    path.write_text(json.dumps(cut))
    assert rescore.main([str(path)]) == 2
    assert json.loads(path.read_text()) == cut
