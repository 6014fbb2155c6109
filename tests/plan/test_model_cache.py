"""The planner's model cache: a second plan answers without torch or timm, from the right entry."""

import json
import os
import subprocess
import sys

from ablate.modelcache import ModelCache


def _plan(sweep, cache, *extra):
    """Run ``ablate plan SWEEP --json`` in a fresh interpreter; (report, heavy modules loaded)."""
    code = ("import sys, json; from ablate import cli\n"
            f"try: cli.main(['plan', {str(sweep)!r}, '--json', *{list(extra)!r}])\n"
            "except SystemExit: pass\n"
            "print(json.dumps(sorted(m for m in ('torch', 'timm') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ABLATE_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stderr
    *report, loaded = out.stdout.strip().splitlines()
    return json.loads("\n".join(report)), json.loads(loaded)


def test_a_second_plan_answers_from_the_cache_without_torch(write_sweep, tmp_path):
    sweep = write_sweep("arms:\n  big: {model.kernel_size: 5}\n")
    cache = tmp_path / "cache"
    first, loaded = _plan(sweep, cache, "--no-data-check")
    assert loaded == ["timm", "torch"]  # the first plan builds the models to check and count
    assert (cache / "models.json").is_file()
    second, loaded = _plan(sweep, cache, "--no-data-check")
    assert loaded == []
    assert second["models"] == first["models"]
    assert {m["params"] for m in second["models"]} and all(m["params"] for m in second["models"])


def test_the_counts_shown_are_the_cached_entries(write_sweep, tmp_path):
    sweep = write_sweep("arms:\n  big: {model.kernel_size: 5}\n")
    cache = tmp_path / "cache"
    _plan(sweep, cache, "--no-data-check")
    # Poison every count entry with a distinct value: a plan that recomputed, or that mixed up
    # the two configurations' entries, could not show exactly these.
    data = json.loads((cache / "models.json").read_text())
    keys = [k for k, v in data["entries"].items() if isinstance(v, dict) and "params" in v]
    assert len(keys) == 2
    for i, k in enumerate(keys):
        data["entries"][k] = {"params": 1000 + i, "flops": 2000 + i}
    (cache / "models.json").write_text(json.dumps(data))
    second, loaded = _plan(sweep, cache, "--no-data-check")
    assert loaded == []
    assert sorted(m["params"] for m in second["models"]) == [1000, 1001]
    assert sorted(m["flops"] - m["params"] for m in second["models"]) == [1000, 1000]


def test_a_damaged_cache_is_ignored_and_rewritten(write_sweep, tmp_path):
    sweep = write_sweep()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models.json").write_text("{not json")
    report, loaded = _plan(sweep, cache, "--no-data-check")
    assert loaded == ["timm", "torch"] and report["models"][0]["params"] > 0
    assert json.loads((cache / "models.json").read_text())["entries"]


def test_entries_are_keyed_by_the_plugins_loaded(tmp_path):
    path = tmp_path / "models.json"
    plain = ModelCache([], path=path)
    plain.put("valid", {"arch": "x"}, True)
    plain.save()
    assert ModelCache([], path=path).get("valid", {"arch": "x"}) is True
    assert ModelCache(["json"], path=path).get("valid", {"arch": "x"}) is None
    assert ModelCache([], path=path).get("valid", {"arch": "y"}) is None


def test_an_invalid_model_is_still_refused_after_a_valid_one_was_cached(write_sweep, tmp_path):
    cache = tmp_path / "cache"
    good = write_sweep()
    _plan(good, cache, "--no-data-check")
    bad = write_sweep("arms:\n  odd: {model.kernel_size: 4}\n", name="bad")
    code = subprocess.run([sys.executable, "-m", "ablate", "plan", str(bad), "--no-data-check"],
                          capture_output=True, text=True,
                          env={**os.environ, "ABLATE_CACHE_DIR": str(cache)})
    assert code.returncode == 2 and "kernel_size" in code.stderr
