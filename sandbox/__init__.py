"""The Magrathea sandbox: offline NTSAPI, FTPS and REST services for developing and testing playbooks."""
