"""See and audit a run: the facts its stages wrote, the charts, and the one-page HTML report."""
