"""Methods: one module per method family, found by name from `config.method`.

Each module (see `jreid.method` for the contract) has `default_config()` (the sections it owns),
`inference(config, num_classes)` (its model and embedding, without data), `build(config, data,
mesh, workdir) -> jreid.method.Method` and optionally `check_config(config)` (checks run before
the data is loaded). A new method is one module here, one config in `configs/` and one test: no
list to edit elsewhere.
"""
