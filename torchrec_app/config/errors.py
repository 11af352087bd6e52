"""The one error type for unusable configuration, raised by any layer and caught by the CLI."""


class ConfigError(ValueError):
    """A recipe, override, config value, plan or checkpoint that cannot be used, with what was expected."""
