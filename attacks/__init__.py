"""attacks: the over-sensitivity side of blindspots (adversarial examples on the same model conventions)."""
