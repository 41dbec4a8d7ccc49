"""`python -m provisioner_cli`, the same as the `provisioner` command."""

from provisioner_cli.main import app

app(prog_name="provisioner")
