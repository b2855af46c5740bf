"""Every DAG's trigger form can be submitted as it opens: no Param turns the form red.

The Airflow UI form sends an empty field as ``null`` (a default of ``""`` or ``None`` shows as an empty
field), and the backend validates each value against the Param's JSON schema with ``jsonschema``. A
``Param("", type="string")`` therefore makes the form invalid until someone types a value (Trigger
disabled): an optional field needs ``"null"`` in its type (``Param(None, type=["null", "string"])``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert bag.import_errors == {}
    assert bag.dags
    return bag.dags


def as_form_sends(default):
    """The value the UI form submits for a field left as it opened: an empty field is null."""
    return None if default in ("", None) else default


def form_errors(params) -> list[str]:
    errors = []
    for name, param in params.items():
        value = as_form_sends(param.value)
        try:
            jsonschema.validate(value, param.schema, format_checker=jsonschema.FormatChecker())
        except jsonschema.ValidationError as exc:
            errors.append(f"{name}: default {param.value!r} sent as {value!r}: {exc.message}")
    return errors


def test_an_empty_string_default_on_a_string_param_is_caught():
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict

    old = ParamsDict({"version": Param("", type="string", title="Model version")})
    assert form_errors(old) == ["version: default '' sent as None: None is not of type 'string'"]
    fixed = ParamsDict({"version": Param(None, type=["null", "string"], title="Model version")})
    assert form_errors(fixed) == []
    assert fixed.validate() == {"version": None}


def test_every_dag_form_is_valid_as_it_opens(dags):
    problems = {dag_id: form_errors(dag.params) for dag_id, dag in dags.items()}
    assert {d: e for d, e in problems.items() if e} == {}


def test_every_dag_runs_with_an_empty_conf(dags):
    for dag_id, dag in dags.items():
        params = copy.deepcopy(dag.params)
        params.update({})  # what a run triggered with conf {} gets
        try:
            params.validate()
        except Exception as exc:  # noqa: BLE001 - the message names the param
            pytest.fail(f"{dag_id}: {exc}")


def test_the_deployment_form_offers_replay_only_promotion_off_by_default(dags):
    params = dags["churn_deployment"].params
    assert params["version"] is None
    assert params["allow_replay_only"] is False
    assert params.get_param("allow_replay_only").schema["type"] == "boolean"
