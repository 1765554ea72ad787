"""Channel rounding for the width multiplier.

MobileNetV2 (Sandler et al., 2018) scales every layer's channels by the width multiplier and rounds them
to a multiple of 8, which keeps vectorised kernels efficient. The rule of the reference implementation:
round to the nearest multiple of `divisor`, at least `min_value`, and never drop more than 10% below the
requested value (if rounding down would, go one multiple up).
"""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Return the multiple of `divisor` nearest to `value`, at least `min_value` and at least 90% of `value`."""
    if divisor <= 0:
        raise ValueError(f"divisor must be positive, got {divisor}")
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
