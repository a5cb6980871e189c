"""`mixserve models` and `mixserve weights`: the test members, the arithmetic specialist, the dev split
and the fitted mixture weights and gate."""
