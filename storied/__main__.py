from storied.cli.main import cli

cli()
