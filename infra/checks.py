"""Static checks of the deployment configuration against the code it deploys.

Run before building the flex template (it needs only the project's virtualenv):

    python infra/checks.py

The unit tests (tests/unit/test_infra_*.py) use the same functions. Nothing here
touches a network or a cloud project.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parent
REPO = INFRA.parent
METADATA = INFRA / "dataflow" / "metadata.json"
EXPORT_MODULE = REPO / "models" / "export.py"

# Which Dataflow template parameter types fit which argparse option kinds.
_STRING_TYPES = {
    "TEXT",
    "PUBSUB_TOPIC",
    "PUBSUB_SUBSCRIPTION",
    "GCS_READ_FILE",
    "GCS_READ_FOLDER",
    "GCS_WRITE_FILE",
    "GCS_WRITE_FOLDER",
    "ENUM",
}


def option_actions(options_cls: type | None = None) -> dict[str, argparse.Action]:
    """The argparse actions a PipelineOptions class defines itself, by dest.

    Only the class's own ``_add_argparse_args`` (and what it calls, e.g. a
    subclass's ``super()``), not Beam's standard options.
    """
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    if options_cls is None:
        from beam_pipelines.options import StreamingOptions as options_cls
    parser = _BeamArgumentParser(add_help=False, allow_abbrev=False)
    options_cls._add_argparse_args(parser)
    return {action.dest: action for action in parser._actions}


def load_metadata(path: Path = METADATA) -> dict[str, Any]:
    return json.loads(path.read_text())


def _param_type_fits(action: argparse.Action, param_type: str) -> bool:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return param_type == "BOOLEAN"
    if action.type in (int, float):
        return param_type == "NUMBER"
    return param_type in _STRING_TYPES


def _same_default(action: argparse.Action, text: str) -> bool:
    if action.type in (int, float):
        try:
            return action.type(text) == action.default
        except ValueError:
            return False
    return text == str(action.default)


def template_parameter_mismatches(
    options_cls: type | None = None, metadata: Mapping[str, Any] | None = None
) -> list[str]:
    """Every way ``metadata.json`` and the pipeline options disagree; [] if none.

    Both directions (an option without a parameter, a parameter without an
    option), and per pair: the parameter type fits the option's type, isOptional
    matches ``required``, a default is recorded as ``defaultValue`` and equal, and
    label and helpText are not empty.
    """
    actions = option_actions(options_cls)
    metadata = load_metadata() if metadata is None else metadata
    params = {p["name"]: p for p in metadata.get("parameters", [])}
    problems = [
        f"pipeline option --{name} has no parameter in infra/dataflow/metadata.json"
        for name in sorted(actions.keys() - params.keys())
    ]
    problems += [
        f"metadata.json parameter {name!r} is not a pipeline option (beam_pipelines/options.py)"
        for name in sorted(params.keys() - actions.keys())
    ]
    for name in sorted(actions.keys() & params.keys()):
        action, param = actions[name], params[name]
        kind = param.get("paramType", "DEFAULT")
        if not _param_type_fits(action, kind):
            problems.append(f"{name}: paramType {kind} does not fit the option's type")
        if bool(param.get("isOptional", False)) == bool(action.required):
            problems.append(f"{name}: isOptional must be {not action.required}")
        if action.default is not None:
            if "defaultValue" not in param:
                problems.append(f"{name}: option default {action.default!r} is not in metadata")
            elif not _same_default(action, param["defaultValue"]):
                problems.append(
                    f"{name}: defaultValue {param['defaultValue']!r} != option default "
                    f"{action.default!r}"
                )
        elif "defaultValue" in param:
            problems.append(f"{name}: defaultValue given but the option has no default")
        for field in ("label", "helpText"):
            if not str(param.get(field, "")).strip():
                problems.append(f"{name}: {field} is empty")
    return problems


def metadata_schema_problems(path: Path = METADATA) -> list[str]:
    """Parse metadata.json as the Dataflow API's TemplateMetadata message.

    Unknown fields or enum values (a misspelt ``paramType``) are errors, as they
    would be for ``gcloud dataflow flex-template build``.
    """
    from google.cloud.dataflow_v1beta3 import types

    try:
        types.TemplateMetadata.from_json(path.read_text(), ignore_unknown_fields=False)
    except Exception as err:  # json_format.ParseError and friends: report, don't crash
        return [f"{path.name}: not a valid TemplateMetadata: {err}"]
    return []


def models_config(text: str) -> dict[str, str]:
    """``name -> base_path`` of a TF Serving ``model_config_list`` (text protobuf)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return {c.name: c.base_path for c in config.model_config_list.config}


def exporter_model_names(path: Path = EXPORT_MODULE) -> tuple[str, ...] | None:
    """``MODEL_NAMES`` of models/export.py read from its source (importing it loads
    TensorFlow, ~25 s); None while that module does not exist."""
    if not path.exists():
        return None
    constants: dict[str, Any] = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name):
                constants[target.id] = node.value
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for name, value in zip(target.elts, node.value.elts, strict=False):
                    if isinstance(name, ast.Name):
                        constants[name.id] = value
    model_names = constants.get("MODEL_NAMES")
    if not isinstance(model_names, ast.Tuple):
        raise ValueError(f"{path}: MODEL_NAMES is not a tuple literal")
    resolved = []
    for element in model_names.elts:
        if isinstance(element, ast.Name):
            element = constants[element.id]
        resolved.append(ast.literal_eval(element))
    return tuple(resolved)


_PLACEHOLDER = re.compile(r"(\$?)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(text: str, values: Mapping[str, Any]) -> str:
    """A Terraform template that uses only ``${name}`` interpolations (and ``$${``
    escapes), rendered as ``templatefile`` does. KeyError names a missing variable;
    directives (``%{``) and expressions are not supported and raise ValueError."""
    if "%{" in text.replace("%%{", ""):
        raise ValueError("template directives (%{...}) are not supported here")
    if re.search(r"(?<!\$)\$\{(?![A-Za-z_][A-Za-z0-9_]*\})", text):
        raise ValueError("only ${name} interpolations are supported here")

    def replace(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        return "${" + name + "}" if escaped else str(values[name])

    return _PLACEHOLDER.sub(replace, text)


def envsubst(text: str, values: Mapping[str, str]) -> str:
    """``envsubst '$A $B'`` for the names of ``values``, but a ``${NAME}`` outside
    them is a KeyError instead of staying as it is (k8s/render.sh checks the same).
    ``$(NAME)`` (Kubernetes' own expansion) is left alone."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: values[m.group(1)], text)


def main() -> int:
    problems = template_parameter_mismatches() + metadata_schema_problems()
    for problem in problems:
        print(f"infra check: {problem}", file=sys.stderr)
    if not problems:
        print("infra checks: metadata.json matches StreamingOptions and the Dataflow schema")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
