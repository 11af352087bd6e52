"""One module per ``torchrec-app`` subcommand, each with ``add_arguments(parser)`` and ``run(args, config)``."""
