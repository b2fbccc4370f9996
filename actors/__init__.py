"""Ray actors: render groups and the pool (to come; see the Ray render-group issue)."""
