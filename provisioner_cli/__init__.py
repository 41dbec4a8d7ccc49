"""`provisioner`: a command line for people, a thin client of the service's HTTP API."""
