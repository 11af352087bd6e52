"""The one error type for unusable configuration, raised by any layer and caught by the CLI."""


class ConfigError(ValueError):
    """A recipe, override, config value, plan or checkpoint that cannot be used, with what was expected."""


def check_choice(section: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` (a section's ``__post_init__`` turns it into the user's error) unless
    ``value`` is one of ``choices``.

    >>> check_choice("train", "amp", "fp8", ("", "bf16"))
    Traceback (most recent call last):
    ...
    ValueError: train.amp='fp8' is not one of , bf16
    """
    if value not in choices:
        raise ValueError(f"{section}.{name}={value!r} is not one of {', '.join(choices)}")
