"""`--weights int8|int4 [--block-size N]` at the CLI and in the manifest: the one-line summary
and `--json` record of the error introduced, one-line errors (exit 2) for bad values, the
manifest's "weights" record checked on load and replayed by `compile --check`, and `opmlc demo
--weights` won by the challenger against a lying server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opmlc.artifact import Build
from opmlc.cli import app
from opmlc.errors import BuildError
from tests.conftest import MODELS
from tests.test_cli import assert_one_line_error

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_compile_prints_the_error_introduced_and_records_it(tmp_path):
    r = invoke("compile", MODELS / "digits_mlp.onnx", "-o", tmp_path / "b", "--weights", "int8",
               "--input-range", "input=0,1")
    assert r.exit_code == 0, r.output
    line = next(x for x in r.stdout.splitlines() if x.startswith("weights int8"))
    assert "one scale per output channel" in line and "2 tensors, 2,368 parameters" in line
    assert "relative RMS 0.00502" in line and "argmax agrees 8/8" in line
    rec = json.loads((tmp_path / "b" / "manifest.json").read_text())["weights"]
    assert rec["format"] == "int8" and rec["block_size"] is None and rec["quantized"] == 2
    assert rec["error"]["numel"] == 2368 and 0 < rec["error"]["max_abs"] < 0.01


def test_compile_json_carries_the_weights_record_and_output_error(tmp_path):
    r = invoke("compile", MODELS / "digits_cnn.onnx", "-o", tmp_path / "b", "--weights", "int4",
               "--block-size", "64", "--input-range", "input=0,1", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["weights"]
    assert doc["format"] == "int4" and doc["block_size"] == 64 and doc["parameters"] == 1352
    out = doc["output_error"]
    assert out["samples"] == 8 and out["rows"] == 8 and out["argmax_agree"] >= 6 and out["max_rel"] < 0.2
    r = invoke("compile", MODELS / "digits_cnn.onnx", "--check", tmp_path / "b")
    assert r.exit_code == 0 and "byte-identical" in r.stdout


def test_token_models_report_the_weight_error_only(tmp_path):
    r = invoke("compile", MODELS / "tiny_llama.onnx", "-o", tmp_path / "b", "--weights", "int8", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["weights"]
    assert doc["quantized"] == 16 and doc["output_error"] is None and doc["error"]["rel_rms"] < 0.01


@pytest.mark.parametrize("args,needle", [
    (["--weights", "int3"], "--weights int3"),
    (["--weights", "int4", "--block-size", "24"], "--block-size 24"),
    (["--weights", "int8", "--block-size", "8"], "power of two ≥ 16"),
    (["--block-size", "32"], "needs --weights"),
])
def test_bad_weight_options_are_one_line_errors(tmp_path, args, needle):
    assert_one_line_error(invoke("compile", MODELS / "digits_mlp.onnx", "-o", tmp_path / "b", *args), needle)
    assert not (tmp_path / "b").exists()
    assert_one_line_error(invoke("demo", *args), needle)


def test_api_refuses_a_bad_format(tmp_path):
    from opmlc import OpmlcError, compile_model

    with pytest.raises(OpmlcError, match="must be one of int8, int4"):
        compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b", weights="fp8")


@pytest.mark.parametrize("change", [{"format": "int3"}, {"block_size": "32"}, {"quantized": None},
                                    {"error": {"rel_rms": "small"}}])
def test_a_damaged_weights_record_stops_the_load(tmp_path, change):
    from opmlc import compile_model

    build = compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b", weights="int4")
    path = build.directory / "manifest.json"
    doc = json.loads(path.read_text())
    doc["weights"].update(change)
    path.write_text(json.dumps(doc))
    with pytest.raises(BuildError, match="weights"):
        Build.load(build.directory)


def test_demo_with_4_bit_weights_is_won_by_the_challenger():
    r = runner.invoke(app, ["demo", "--json", "--weights", "int4"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["winner"] == "challenger" and doc["reason"] == "step proven" and doc["vm_steps"] > 0
    assert doc["node"] == 2  # the lie is in the last node, a qmatmul: its MIPS steps were disputed


def test_inspect_shows_the_weights_format(tmp_path):
    from opmlc import compile_model

    compile_model(MODELS / "digits_mlp.onnx", tmp_path / "b", weights="int4", block_size=16)
    r = invoke("inspect", tmp_path / "b")
    assert r.exit_code == 0 and "weights int4 (blocks of 16): 2 tensors, 2,368 parameters" in r.stdout
    r = invoke("inspect", tmp_path / "b", "--json")
    assert json.loads(r.stdout)["weights"]["block_size"] == 16
