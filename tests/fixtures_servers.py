"""Server fixtures (owned by the lab-servers work)."""
