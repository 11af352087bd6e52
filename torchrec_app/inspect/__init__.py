"""Inspection tools: ``torchrec-app plan`` shows, saves, charts and diffs sharding plans.

    planner_run   run TorchRec's planner, keeping what it chose and its stats table
    plan_report   per-table / per-rank memory and cost of a plan (text, JSON)
    plan_fit      why a model does not fit a topology, and what would fix it
    plan_diff     what changed between two saved plans
    plan_chart    memory and cost per rank, split by table (PNG)
    plan_cli      the command
"""
