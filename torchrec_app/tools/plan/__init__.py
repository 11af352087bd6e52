"""Plan inspection behind ``torchrec-app plan``: show, save, chart and diff sharding plans.

    planner_run   run TorchRec's planner, keeping what it chose and its stats
    model         the model the trainer would build, on ``meta``, from a dataset or a recipe
    report        per-table / per-rank memory and cost of a plan (text, JSON)
    text          the report as text
    fit           why a model does not fit a topology, and what would fix it
    diff          what changed between two saved plans
    chart         memory and cost per rank, split by table (PNG)

The command itself is :mod:`torchrec_app.commands.plan`.
"""
