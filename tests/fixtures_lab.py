"""Host and whole-lab fixtures (owned by the lab-hosts work)."""
