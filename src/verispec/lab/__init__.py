"""The coupling experiments of the papers as reproducible commands (`verispec lab ...`); see docs/lab.md."""
