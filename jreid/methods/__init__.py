"""Methods with their own training recipe: setups the train loop picks by `config.method`.

Each module defines a subclass of `jreid.train.Setup` registered in `jreid.train.METHODS`.
"""
