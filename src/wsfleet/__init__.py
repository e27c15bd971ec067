"""wsfleet: client library, CLI, local fleet and load tool."""
