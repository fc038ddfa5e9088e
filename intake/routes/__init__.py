"""HTTP handlers, thin: each calls into ``intake.submissions`` and friends."""
