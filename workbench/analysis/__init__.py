"""The analyses: each takes a model (through its adapter, `workbench.models.adapter`) and a prompt
and returns a result with `.to_pandas()` and `.plot()`. The verbs are re-exported at the top level
(`import workbench as wb; wb.trace(...)`); `capabilities.py` says which family supports which."""
