"""Subcommands of the attri-ssc CLI, one module per family."""
