"""secret-injector: a mutating admission webhook that injects external secrets into pods."""

__version__ = "0.1.0"
