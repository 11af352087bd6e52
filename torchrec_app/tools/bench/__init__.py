"""``torchrec-app bench``: how fast and how good a setup is, and why.

A short sibling of training, not a second trainer: every measurement is a real training
run (the torchx ``train`` component, as users launch it) of a recipe with overrides, and the numbers
are read back from its run directory. Modules:

* :mod:`~torchrec_app.tools.bench.cases`: what to run (``NAME=RECIPE@NPROC key=value ...``, suites).
* :mod:`~torchrec_app.tools.bench.data`: the built-in generated dataset, made once and cached.
* :mod:`~torchrec_app.tools.bench.launch`: one training run as a subprocess; its results.
* :mod:`~torchrec_app.tools.bench.step_profile`: the step-time split (a trainer hook).
* :mod:`~torchrec_app.tools.bench.report`: medians and spreads, ``bench.json`` and ``bench.md``.
* :mod:`~torchrec_app.tools.bench.plots`: the PNG charts.
* :mod:`~torchrec_app.tools.bench.gpu_check`: the first checks on a lent GPU host (``launch/gpu_check.sh``).
* :mod:`~torchrec_app.commands.bench`: the command.
"""
