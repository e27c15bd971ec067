"""Static files of the dashboard page (a package so wheels ship them)."""
