"""`sluice doc`: Markdown to stdout or a file, the HTML page, price overrides, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from click.testing import CliRunner

from sluiceway.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _spec(tmp_path: Path, example: str = "clickstream_batch") -> Path:
    target = tmp_path / example / "pipeline.yaml"
    target.parent.mkdir(parents=True)
    shutil.copy(EXAMPLES / example / "pipeline.yaml", target)
    return target


def _priced_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "priced.yaml"
    data = {
        "version": 1,
        "pipeline": "priced",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "inventory": {"volume": "2M rows/day"},
            }
        },
        "sinks": [{"type": "delta", "path": "lake/events"}],
        "compliance": {"retention": "400d"},
    }
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    return spec


def test_doc_prints_markdown_to_stdout(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["doc", str(_spec(tmp_path))])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Data Pipeline Specification: clickstream_batch\n")
    assert "| events | files | 2M rows/day |" in result.stdout
    assert "```mermaid\nflowchart LR\n" in result.stdout


def test_output_option_writes_the_markdown_file(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "spec.md"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["doc", str(_spec(tmp_path)), "--output", str(out)])

    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Data Pipeline Specification: clickstream_batch")
    assert "## 9. Risks and mitigations" in text
    assert "# Data Pipeline" not in result.stdout
    assert str(out) in result.stdout


def test_html_option_writes_a_self_contained_page(tmp_path: Path) -> None:
    out = tmp_path / "spec.html"
    spec = _spec(tmp_path, "clickstream_stream")
    result = CliRunner().invoke(main, ["doc", str(spec), "--html", "-o", str(out)])

    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg " in page and "</svg>" in page
    assert "<script" not in page
    assert "<title>Data Pipeline Specification: clickstream_stream</title>" in page


def test_prices_file_overrides_the_default_prices(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("storage_local_gb_month: 0.5\n", encoding="utf-8")
    spec = _priced_spec(tmp_path)

    default = CliRunner().invoke(main, ["doc", str(spec)])
    priced = CliRunner().invoke(main, ["doc", str(spec), "--prices", str(prices)])

    assert default.exit_code == 0 and priced.exit_code == 0, priced.output
    # 0.2 GB/day × 400 days = 80 GB: $6.40 at the default $0.08, $40.00 at $0.50.
    assert "| 80.0000 GB-month | 0.08 USD | 6.40 USD |" in default.stdout
    assert "| 80.0000 GB-month | 0.5 USD | 40.00 USD |" in priced.stdout


def test_an_unknown_price_exits_2_with_the_known_names(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("storage_lukewarm: 1\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["doc", str(_priced_spec(tmp_path)), "--prices", str(prices)])

    assert result.exit_code == 2
    assert "unknown price 'storage_lukewarm'" in result.stderr
    assert "Traceback" not in result.output


def test_a_spec_that_does_not_load_exits_2_with_its_problems(tmp_path: Path) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text(
        "version: 1\npipeline: broken\nsources:\n  a: {type: filez, path: x}\n"
        "sinks: [{type: delta, path: out}]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["doc", str(spec)])

    assert result.exit_code == 2
    assert "sources.a.type" in result.stderr
    assert "files" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_an_unwritable_output_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "missing-folder" / "spec.md"
    result = CliRunner().invoke(main, ["doc", str(_spec(tmp_path)), "--output", str(out)])

    assert result.exit_code == 2
    assert "Could not write" in result.stderr
    assert "writable --output" in result.stderr
    assert not out.exists()


def test_the_document_names_the_schedule_and_the_dependencies(tmp_path: Path) -> None:
    spec = _priced_spec(tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["depends_on"] = ["orders", "refunds"]
    data["schedule"] = {"cron": "0 2 * * *", "timezone": "Europe/Paris"}
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    (tmp_path / "plain").mkdir()
    plain = _priced_spec(tmp_path / "plain")

    done = CliRunner().invoke(main, ["doc", str(spec)])
    bare = CliRunner().invoke(main, ["doc", str(plain)])

    assert done.exit_code == 0, done.output
    assert "| Schedule | cron `0 2 * * *` Europe/Paris, catchup latest |" in done.output
    assert "| Depends on | orders, refunds |" in done.output
    assert "| Schedule | not scheduled" in bare.output and "| Depends on | nothing |" in bare.output
