"""What the read-only commands print: the catalog, the fleet figures, the cost report."""

from __future__ import annotations

from rich.console import Console

from provisioner_cli.render import costs_table


def test_types_lists_the_catalog_with_prices_and_billing_rules(cli):
    result = cli("types", "--gpu", "t4", "--provider", "aws")

    assert result.exit_code == 0, result.output
    header, *rows = [line.split() for line in result.stdout.splitlines()]
    assert header == ["NAME", "PROVIDER", "GPU", "VCPUS", "MEMORY", "HOURLY", "BILLING"]
    assert [row[0] for row in rows] == ["g4dn.xlarge", "g4dn.12xlarge"]
    assert result.stdout.splitlines()[1].split() == [
        "g4dn.xlarge", "aws", "1", "x", "T4", "4", "16", "GiB", "$0.526", "per", "1", "s,",
        "60", "s", "minimum",
    ]


def test_types_that_nothing_matches_says_so(cli):
    result = cli("types", "--gpu", "B200")  # no such GPU in the catalog

    assert (result.exit_code, result.stdout) == (0, "No instance type matches.\n")


def test_stats_shows_the_users_fleet_figures(cli):
    instance = cli.json("launch", "g4dn.xlarge", "--wait")
    cli.json("launch", "p3.2xlarge", "--wait")
    cli.json("stop", instance["id"], "--wait")
    figures = cli.json("stats")

    result = cli("stats")

    assert result.exit_code == 0, result.output
    shown = dict(line.rstrip().split("  ", 1) for line in result.stdout.splitlines())
    assert {k: v.strip() for k, v in shown.items()} == {
        "instances": "1 live of 2",
        "by status": "READY 1, TERMINATED 1",
        "by provider": "aws 2, azure 0",
        "burn rate": "$3.06/h",
        "total cost": f"${figures['totalCostUsd']}",
        "always-on cost": f"${figures['alwaysOnCostUsd']}",
        "saving": f"${figures['savingUsd']}" + (
            f" ({figures['savingPercent']}%)" if figures["savingPercent"] else ""),
        "since": figures["periodStart"],
    }


def test_an_operators_stats_cover_every_user(cli):
    cli.json("launch", "g4dn.xlarge", "--no-wait")
    cli.json("launch", "g4dn.xlarge", "--no-wait", user="bob")

    assert cli.json("stats", user="ops:admin")["total"] == 2
    assert cli.json("stats", user="bob")["total"] == 1


def test_the_cost_chart_draws_each_day_in_proportion_to_the_largest():
    # The answer of GET /api/costs?groupBy=day (issue 10, item 3).
    report = {
        "from": "2026-12-01T00:00:00Z", "to": "2026-12-04T00:00:00Z", "groupBy": "day",
        "groups": [
            {"key": "2026-12-01", "costUsd": "2.000000", "billedSeconds": 7200, "instances": 3},
            {"key": "2026-12-02", "costUsd": "0.500000", "billedSeconds": 1800, "instances": 1},
            {"key": "2026-12-03", "costUsd": "0.000000", "billedSeconds": 0, "instances": 0},
        ],
        "totalUsd": "2.500000",
    }
    console = Console(width=120, record=True, color_system=None)

    console.print(costs_table(report, chart=True))

    lines = console.export_text().splitlines()
    assert lines[0].split() == ["DAY", "COST", "BILLED", "INSTANCES"]
    bars = {line.split()[0]: line.count("█") for line in lines[1:4]}
    assert bars == {"2026-12-01": 40, "2026-12-02": 10, "2026-12-03": 0}
    assert lines[1].split()[-2:] == ["2h00m", "3"]
    assert lines[-1].split() == ["TOTAL", "$2.500000"]
