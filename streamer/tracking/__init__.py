"""Track ids and boxes between inferences (issue 16)."""
