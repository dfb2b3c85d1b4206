"""fedmq's built-in tasks: `toy` (the PySyft tutorial's four points) and `digits` (scikit-learn)."""
