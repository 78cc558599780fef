"""The built-in step kinds of a failover. Importing this package registers them; SDKs load inside the steps."""
