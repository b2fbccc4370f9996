"""Jobs: command line, manifests, plans and reports (the top layer; nothing imports it)."""
