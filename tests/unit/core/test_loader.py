"""Spec validation: every problem at once, with its YAML path, line and a did-you-mean."""

from __future__ import annotations

import textwrap

import pytest

import sluiceway
from sluiceway.checks.vocabulary import NotNullConfig, RowCountBetweenConfig
from sluiceway.core.loader import load_spec, parse_spec
from sluiceway.errors import SpecError
from sluiceway.sinks.delta import DeltaSinkConfig
from sluiceway.sources.files import FilesSourceConfig
from sluiceway.transforms.dedup import DedupStepConfig
from sluiceway.transforms.sql import SqlStepConfig

BROKEN = textwrap.dedent(
    """\
    version: 1
    pipeline: orders
    sources:
      events:
        type: file
        path: data/
      users:
        type: files
        path: users/
        header: sometimes
        contract:
          columns:
            id: {type: string, nulable: false}
    steps:
      - dedupe: {keys: [id]}
      - sql: SELECT * FROM input
    sinks:
      - type: delta
        path: lake/orders
    """
)

VALID = textwrap.dedent(
    """\
    version: 1
    pipeline: orders
    sources:
      events:
        type: files
        path: ${DATA_DIR:-data/}
        format: csv
        contract:
          columns:
            id: {type: string, nullable: false}
            amount: {type: double, min: 0}
    steps:
      - dedup: [id]
      - sql: SELECT * FROM input
    pii:
      email: hmac
    checks:
      - expect_column_values_to_not_be_null: {column: id}
      - row_count_between: {min_value: 1, severity: warn}
    sinks:
      - type: delta
        path: ${LAKE}/orders
        mode: append
    """
)


def problems_of(
    text: str, environ: dict[str, str] | None = None
) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, environ=environ or {})
    return {p.path: (p.line, p.message) for p in caught.value.problems}


def test_every_problem_of_a_spec_is_reported_at_once_with_path_and_line() -> None:
    problems = problems_of(BROKEN)

    assert problems["sources.events.type"][0] == 5
    assert "unknown source type 'file'" in problems["sources.events.type"][1]
    assert "Did you mean 'files'?" in problems["sources.events.type"][1]
    assert problems["steps[0].dedupe"][0] == 15
    assert "Did you mean 'dedup'?" in problems["steps[0].dedupe"][1]
    assert problems["sources.users.contract.columns.id.nulable"][0] == 13
    assert "Did you mean 'nullable'?" in problems["sources.users.contract.columns.id.nulable"][1]
    assert problems["sources.users.header"][0] == 10
    assert "valid boolean" in problems["sources.users.header"][1]


def test_a_plugin_that_fails_validation_is_not_reported_a_second_time_as_missing() -> None:
    problems = problems_of(BROKEN)

    assert sorted(problems) == [
        "sources.events.type",
        "sources.users.contract.columns.id.nulable",
        "sources.users.header",
        "steps[0].dedupe",
    ]


def test_an_unknown_top_level_key_suggests_the_field_it_resembles() -> None:
    text = VALID.replace("steps:", "step:")

    problems = problems_of(text, {"LAKE": "lake"})

    assert problems["step"][0] == 12
    assert "Did you mean 'steps'?" in problems["step"][1]


def test_a_wrong_value_in_a_step_is_reported_under_the_step_key() -> None:
    text = VALID.replace("- dedup: [id]", "- dedup: {keys: [id], keep: middle}")

    problems = problems_of(text, {"LAKE": "lake"})

    assert list(problems) == ["steps[0].dedup.keep"]
    assert problems["steps[0].dedup.keep"][0] == 13
    assert "'first' or 'last'" in problems["steps[0].dedup.keep"][1]


def test_environment_references_resolve_and_defaults_apply_when_unset() -> None:
    pipeline = parse_spec(VALID, environ={"LAKE": "/data/lake"})

    source = pipeline.sources["events"]
    assert isinstance(source, FilesSourceConfig)
    assert source.path == "data/"
    sink = pipeline.sinks[0]
    assert isinstance(sink, DeltaSinkConfig)
    assert sink.path == "/data/lake/orders"


def test_an_environment_default_gives_way_to_a_set_variable() -> None:
    pipeline = parse_spec(VALID, environ={"LAKE": "lake", "DATA_DIR": "incoming/"})

    source = pipeline.sources["events"]
    assert isinstance(source, FilesSourceConfig)
    assert source.path == "incoming/"


def test_a_missing_environment_variable_is_a_problem_naming_it() -> None:
    problems = problems_of(VALID)

    assert list(problems) == ["sinks[0].path"]
    line, message = problems["sinks[0].path"]
    assert line == 22
    assert "'LAKE' is not set" in message


def test_a_value_from_the_environment_never_appears_in_a_message() -> None:
    secret_mode = "s3cr3t-mode-value"
    secret_bound = "987654321"
    secret_type = "s3cr3t-source-type"
    text = textwrap.dedent(
        """\
        version: 1
        pipeline: orders
        sources:
          events: {type: files, path: data/}
          other: {type: "${SOURCE_TYPE}", path: data/}
        checks:
          - row_count_between: {min_value: "${MIN_ROWS}", max_value: 1}
        sinks:
          - {type: delta, path: lake, mode: "${SINK_MODE}"}
        """
    )
    environ = {"SINK_MODE": secret_mode, "MIN_ROWS": secret_bound, "SOURCE_TYPE": secret_type}

    with pytest.raises(SpecError) as caught:
        parse_spec(text, environ=environ)

    message = str(caught.value)
    assert {p.path for p in caught.value.problems} == {
        "sinks[0].mode",
        "checks[0].row_count_between",
        "sources.other.type",
    }
    for secret in environ.values():
        assert secret not in message
    assert "${SOURCE_TYPE}" in message


def test_invalid_yaml_is_one_problem_with_its_line() -> None:
    text = "version: 1\npipeline: [orders\n  sources: {}\n"

    with pytest.raises(SpecError) as caught:
        parse_spec(text)

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].line == 3
    assert "not valid YAML" in caught.value.problems[0].message


def test_a_spec_file_problem_names_the_file(tmp_path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(BROKEN)

    with pytest.raises(SpecError) as caught:
        load_spec(spec)

    assert {p.file for p in caught.value.problems} == {str(spec)}
    assert str(spec) in str(caught.value)


def test_a_duplicate_key_is_reported_at_its_second_occurrence() -> None:
    text = VALID.replace("pipeline: orders\n", "pipeline: orders\npipeline: other\n")

    problems = problems_of(text, {"LAKE": "lake"})

    assert problems["pipeline"] == (3, "duplicate key 'pipeline'")


def test_the_python_model_equals_the_yaml_spec() -> None:
    from_yaml = parse_spec(VALID, environ={"LAKE": "lake"})

    built = sluiceway.Pipeline(
        version=1,
        pipeline="orders",
        sources={
            "events": FilesSourceConfig(
                path="data/",
                format="csv",
                contract=sluiceway.Contract(
                    columns={
                        "id": sluiceway.ColumnContract(nullable=False),
                        "amount": sluiceway.ColumnContract(type="double", min=0),
                    }
                ),
            )
        },
        steps=[DedupStepConfig(keys=["id"]), SqlStepConfig(query="SELECT * FROM input")],
        pii={"email": "hmac"},
        checks=[NotNullConfig(column="id"), RowCountBetweenConfig(min_value=1, severity="warn")],
        sinks=[DeltaSinkConfig(path="lake/orders", mode="append")],
    )

    assert built.spec_hash() == from_yaml.spec_hash()
    assert built == from_yaml


def test_a_pipeline_from_a_dict_equals_the_yaml_spec() -> None:
    from_yaml = parse_spec(VALID, environ={"LAKE": "lake"})

    from_dict = sluiceway.Pipeline.from_dict(from_yaml.to_data())  # type: ignore[attr-defined]

    assert from_dict.spec_hash() == from_yaml.spec_hash()
    assert from_dict.to_data() == from_yaml.to_data()


def test_a_dict_spec_reports_problems_without_lines() -> None:
    data = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"events": {"type": "file", "path": "x"}},
        "sinks": [{"type": "delta", "path": "lake"}],
    }

    with pytest.raises(SpecError) as caught:
        sluiceway.Pipeline.from_dict(data)  # type: ignore[attr-defined]

    [problem] = caught.value.problems
    assert problem.path == "sources.events.type"
    assert "Did you mean 'files'?" in problem.message
    assert problem.line is None


def test_a_different_spec_has_a_different_hash() -> None:
    base = parse_spec(VALID, environ={"LAKE": "lake"})

    changed = parse_spec(VALID, environ={"LAKE": "elsewhere"})

    assert changed.spec_hash() != base.spec_hash()


def test_a_block_with_a_misspelt_type_is_checked_as_the_type_it_most_likely_means() -> None:
    text = BROKEN.replace("path: data/", "path: data/\n    formt: csv")

    problems = problems_of(text)

    assert "Did you mean 'files'?" in problems["sources.events.type"][1]
    assert "Did you mean 'format'?" in problems["sources.events.formt"][1]


def test_a_value_outside_its_choices_suggests_the_closest_one() -> None:
    text = VALID.replace("version: 1", "version: 1\nmode: strem")

    [(_, message)] = problems_of(text, {"LAKE": "/data/lake"}).values()

    assert "(got 'strem'). Did you mean 'stream'?" in message


STORAGE = textwrap.dedent(
    """\
    version: 1
    pipeline: orders
    sources:
      orders:
        type: files
        path: s3://landing/orders/
        storage_options: {endpoint_ur: "http://127.0.0.1:9000", AWS_S3_LOCKING_PROVIDER: x}
    sinks:
      - type: delta
        path: s3://lake/orders
        storage_options:
          secret_acess_key: the-secret-itself
          aws_virtual_hosted_style_request: "false"
          AWS_ALLOW_HTTP: "true"
          timeout: 30s
    dead_letter:
      path: s3://lake/dead_letter
      storage_options: {region: eu-west-1, access_key_id: k, secret_access_key: s}
    """
)


def test_a_misspelt_storage_option_is_a_problem_with_a_suggestion_and_no_value() -> None:
    problems = problems_of(STORAGE)

    assert sorted(problems) == ["sinks[0].storage_options", "sources.orders.storage_options"]
    line, message = problems["sources.orders.storage_options"]
    assert line == 7 and "'endpoint_ur': did you mean 'endpoint_url'?" in message
    line, message = problems["sinks[0].storage_options"]
    assert "'secret_acess_key': did you mean 'secret_access_key'?" in message
    assert "the-secret-itself" not in message


def test_store_settings_this_list_does_not_know_pass_to_the_store() -> None:
    from sluiceway.core.storage import check_storage_options

    given = {
        "AWS_ROLE_ARN": "arn:aws:iam::1:role/x",
        "aws_web_identity_token_file": "/var/run/token",
        "sas_token": "t",
        "account_name": "a",
        "google_service_account": "/k.json",
        "some_future_setting": "1",
    }

    assert check_storage_options(given) == given


def test_a_check_naming_a_table_that_is_neither_a_source_nor_a_file_is_a_problem() -> None:
    text = textwrap.dedent(
        """\
        version: 1
        pipeline: orders
        sources:
          orders: {type: files, path: orders.csv}
          customers: {type: files, path: customers.csv}
        checks:
          - values_exist_in: {column: customer_id, to_table: customerz}
          - values_exist_in: {column: customer_id, to_table: ref/customers.parquet}
          - values_exist_in: {column: customer_id, to_table: customers}
        sinks:
          - {type: delta, path: lake/orders}
        """
    )

    problems = problems_of(text)

    [(path, (_, message))] = problems.items()
    assert path.startswith("checks[0]")
    assert "unknown table 'customerz'. Did you mean 'customers'?" in message
