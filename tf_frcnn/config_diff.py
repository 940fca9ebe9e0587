"""What differs between two configs, key by key: ``tf-frcnn eval``/``export`` say it when the
``--config`` given is not the one the model directory was trained with."""

AUTO = "auto"


def _flat(values, prefix=""):
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_differences(given, trained):
    """["key: trained value -> given value"] of the keys whose values differ, by key; a key
    the given config leaves "auto" (image sizes, anchors) was resolved into the trained one's
    numbers and does not count."""
    mine, theirs = _flat(given.to_dict()), _flat(trained.to_dict())
    lines = []
    for key in sorted(set(mine) | set(theirs)):
        value, trained_value = mine.get(key), theirs.get(key)
        if value != trained_value and value != AUTO:
            lines.append(f"{key}: {trained_value!r} -> {value!r}")
    return lines
