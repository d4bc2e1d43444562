"""Runs `data_pipelines.synthreid.cli.main` (``python -m data_pipelines.synthreid``)."""

from data_pipelines.synthreid.cli import main

main()
