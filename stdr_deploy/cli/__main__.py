"""`python -m stdr_deploy.cli` runs the `stdr-deploy` command."""

from stdr_deploy.cli import main

main()
