"""`provisioner costs` against the API's cost report (GET /api/costs): the totals of the
records, grouped, and a bar per day."""

from __future__ import annotations

from decimal import Decimal

from provisioner_cli.exit_codes import ExitCode


def run_for(cli, clock, instance_type: str, **duration: float) -> dict:
    """Launch an instance, let it run for `duration`, stop it; its final record."""
    launched = cli.json("launch", instance_type, "--wait")
    clock.advance(**duration)
    [stopped] = cli.json("stop", launched["id"], "--wait")
    return dict(stopped)


def test_costs_by_day_charts_each_days_cost_and_totals_the_records(cli, clock):
    monday = run_for(cli, clock, "g4dn.xlarge", hours=1)  # 2026-03-02, from 09:00
    clock.advance(hours=24)
    tuesday = run_for(cli, clock, "p3.2xlarge", minutes=30)  # 2026-03-03

    result = cli("costs", "--from", "2026-03-01", "--to", "2026-03-04", "--by", "day")

    assert result.exit_code == 0, result.output
    title, header, *rows, total = result.stdout.splitlines()
    assert title == ("Costs from 2026-03-01T00:00:00.000Z to 2026-03-04T00:00:00.000Z, "
                     "by day")
    assert header.split() == ["DAY", "COST", "BILLED", "INSTANCES"]
    shown = {row.split()[0]: row for row in rows}
    assert set(shown) == {"2026-03-02", "2026-03-03"}
    assert f"${monday['costUsd']}" in shown["2026-03-02"]
    assert f"${tuesday['costUsd']}" in shown["2026-03-03"]
    # Tuesday (1.53 $) cost most: its bar is full; Monday's (0.53 $) about a third of it.
    bars = {day: row.count("█") for day, row in shown.items()}
    assert bars["2026-03-03"] == 40 and 12 <= bars["2026-03-02"] <= 14
    records_total = Decimal(monday["costUsd"]) + Decimal(tuesday["costUsd"])
    assert total.split() == ["TOTAL", f"${records_total}"]


def test_costs_default_to_this_month_by_type_and_parse_as_json(cli, clock):
    first = run_for(cli, clock, "g4dn.xlarge", minutes=10)
    second = run_for(cli, clock, "g4dn.xlarge", minutes=20)

    report = cli.json("costs")
    shown = cli("costs")

    assert (report["from"], report["groupBy"]) == ("2026-03-01T00:00:00.000Z", "instanceType")
    [group] = report["groups"]
    assert (group["key"], group["instances"]) == ("g4dn.xlarge", 2)
    assert Decimal(report["totalUsd"]) == Decimal(first["costUsd"]) + Decimal(second["costUsd"])
    assert shown.stdout.splitlines()[1].split() == ["TYPE", "COST", "BILLED", "INSTANCES"]


def test_an_operator_sees_every_users_costs_by_user_and_one_users_with_user(cli, clock):
    alices = run_for(cli, clock, "g4dn.xlarge", minutes=10)
    bobs = cli.json("launch", "p3.2xlarge", "--wait", user="bob")
    clock.advance(minutes=10)
    cli.json("stop", bobs["id"], "--wait", user="bob")

    everyone = cli.json("costs", "--by", "user", user="ops:admin")
    only_alice = cli.json("costs", "--by", "user", "--user", "alice", user="ops:admin")

    assert sorted(g["key"] for g in everyone["groups"]) == ["alice", "bob"]
    assert [(g["key"], g["costUsd"]) for g in only_alice["groups"]] == [
        ("alice", alices["costUsd"])]


def test_a_window_longer_than_the_api_serves_is_refused_with_its_reason(cli):
    result = cli("costs", "--from", "2026-01-01", "--to", "2026-06-01")

    assert result.exit_code == ExitCode.REFUSED
    assert result.stderr == ("error: 400 Bad Request: The window may span at most 92 days; "
                             "ask for several windows.\n")
