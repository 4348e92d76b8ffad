"""The Dataflow Flex Template against the pipeline it launches (no network).

``infra/checks.py`` holds the comparisons; these tests run them and show that
they fail when the template and the options drift apart.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from beam_pipelines.options import StreamingOptions

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


checks = _load("infra_checks", INFRA / "checks.py")
launcher = _load("infra_dataflow_main", INFRA / "dataflow" / "main.py")


def test_metadata_has_one_parameter_per_streaming_option() -> None:
    assert checks.template_parameter_mismatches() == []


def test_check_reports_an_option_added_without_its_template_parameter() -> None:
    class WithNewOption(StreamingOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            super()._add_argparse_args(parser)
            parser.add_argument("--max_events_per_user", type=int, default=100)

    problems = checks.template_parameter_mismatches(WithNewOption)
    assert problems == [
        "pipeline option --max_events_per_user has no parameter in infra/dataflow/metadata.json"
    ]


def test_check_reports_a_parameter_without_an_option_and_drifting_details() -> None:
    metadata = copy.deepcopy(checks.load_metadata())
    params = {p["name"]: p for p in metadata["parameters"]}
    params["allowed_lateness_s"]["defaultValue"] = "3600"  # the code says 600
    params["write_batch_size"]["paramType"] = "TEXT"  # an int option
    params["reward"]["helpText"] = " "
    metadata["parameters"].append({"name": "window_s", "label": "x", "helpText": "y"})
    metadata["parameters"].remove(params["model_base"])

    problems = checks.template_parameter_mismatches(StreamingOptions, metadata)
    assert problems == [
        "pipeline option --model_base has no parameter in infra/dataflow/metadata.json",
        "metadata.json parameter 'window_s' is not a pipeline option (beam_pipelines/options.py)",
        "allowed_lateness_s: defaultValue '3600' != option default 600.0",
        "reward: helpText is empty",
        "write_batch_size: paramType TEXT does not fit the option's type",
    ]


def test_metadata_is_valid_for_the_dataflow_api(tmp_path: Path) -> None:
    assert checks.metadata_schema_problems() == []
    # Negative control: the same parser rejects a misspelt enum value.
    broken = tmp_path / "metadata.json"
    broken.write_text(checks.METADATA.read_text().replace('"NUMBER"', '"NUMERIC"', 1))
    problems = checks.metadata_schema_problems(broken)
    assert len(problems) == 1 and "NUMERIC" in problems[0]


def test_metadata_marks_the_template_as_streaming() -> None:
    assert checks.load_metadata()["streaming"] is True


def test_launcher_adds_template_defaults_only_when_not_given() -> None:
    defaults = {"--store_config": "/template/store.yaml", "--sdk_container_image": "img:1"}
    assert launcher.with_defaults(["--reward=music"], defaults) == [
        "--reward=music",
        "--store_config=/template/store.yaml",
        "--sdk_container_image=img:1",
    ]
    given = ["--store_config=/other.yaml", "--sdk_container_image=img:2"]
    assert launcher.with_defaults(given, defaults) == given
    assert launcher.with_defaults([], {"--sdk_container_image": None}) == []


# --- Dockerfiles -------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for kind, args in instructions:
        if kind == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def _copies(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """COPY source -> destination (relative to the last WORKDIR when relative)."""
    workdir, copies = "/", {}
    for kind, args in instructions:
        if kind == "WORKDIR":
            workdir = args
        elif kind == "COPY" and not args.startswith("--from"):
            source, dest = args.split()
            if dest.endswith("/") and not source.endswith("/"):  # into a directory
                dest += Path(source).name
            dest = dest.rstrip("/")
            if not dest.startswith("/"):
                dest = f"{workdir.rstrip('/')}/{dest.removeprefix('./')}"
            copies[source] = dest
    return copies


def _setup_py() -> tuple[str, list[str]]:
    """(apache-beam pin, top-level packages) of setup.py, read from its source."""
    tree = ast.parse((REPO / "setup.py").read_text())
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    beam = next(s for s in strings if isinstance(s, str) and s.startswith("apache-beam"))
    packages = [s.rstrip("*") for s in strings if isinstance(s, str) and s.endswith("*")]
    return beam.split("==")[1], packages


def test_flex_template_dockerfile_matches_setup_py_and_the_launcher() -> None:
    instructions = _instructions(INFRA / "dataflow" / "Dockerfile")
    beam_version, packages = _setup_py()
    args = [a for kind, a in instructions if kind == "ARG"]
    assert f"BEAM_VERSION={beam_version}" in args, "base image Beam != setup.py's pin"
    images = [a.split()[0] for kind, a in instructions if kind == "FROM"]
    assert images == [
        "gcr.io/dataflow-templates-base/python311-template-launcher-base:latest",
        "apache/beam_python3.11_sdk:${BEAM_VERSION}",
    ]
    copies = _copies(instructions)
    for package in packages:
        assert copies.get(package) == f"/template/{package}", f"{package} is not copied"
    env = _env(instructions)
    assert copies["setup.py"] == env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"] == "/template/setup.py"
    assert copies["infra/dataflow/main.py"] == env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    assert env["RTP_SDK_CONTAINER_IMAGE"] == "${SDK_CONTAINER_IMAGE}"
    assert launcher.IMAGE_ENV == "RTP_SDK_CONTAINER_IMAGE"
    # main.py finds the store config where the Dockerfile puts infra/generated/.
    main_dir = Path(env["FLEX_TEMPLATE_PYTHON_PY_FILE"]).parent
    store = launcher.STORE_CONFIG.relative_to(Path(launcher.__file__).resolve().parent)
    assert main_dir / store == Path(copies["infra/generated/"]) / "store.yaml"
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in instructions


def test_dockerfile_sources_exist_or_are_generated_and_uploaded() -> None:
    for dockerfile in (INFRA / "Dockerfile", INFRA / "dataflow" / "Dockerfile"):
        for source in _copies(_instructions(dockerfile)):
            if source.startswith("infra/generated/"):
                # Rendered per deployment: ignored by git, but uploaded to Cloud Build.
                assert "generated/" in (INFRA / ".gitignore").read_text()
                rules = (INFRA / ".gcloudignore").read_text().splitlines()
                assert not [r for r in rules if "generated" in r and not r.startswith("#")]
                continue
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"


def test_service_image_installs_every_package() -> None:
    copies = _copies(_instructions(INFRA / "Dockerfile"))
    _, packages = _setup_py()
    assert {p for p in packages} <= {Path(s).name for s in copies}
    assert ("ENTRYPOINT", '["rtp"]') in _instructions(INFRA / "Dockerfile")


def test_checks_cli_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert checks.main() == 0
    assert "matches StreamingOptions" in capsys.readouterr().out
