"""The self-supervised methods --ssl offers: name -> the Method class. A method is one file (its Method
subclass, with its options' dataclass as `Options` and its own defaults as `defaults`) and one line
registering it (methods/__init__.py, or a user's own code before vitfast.train.main runs)."""

SSL_METHODS = {}


def register_ssl_method(method):
    """Offer `method` (a SelfSupervised subclass) as --ssl method.name; returns it (usable as a decorator)."""
    if not method.name or not str(method.name).isidentifier():
        raise ValueError(f"register_ssl_method: {method.__name__}.name must be an identifier, got {method.name!r}")
    SSL_METHODS[method.name] = method
    return method
