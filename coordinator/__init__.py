"""The coordinator: rounds, strategies, evaluation, checkpoints and the fedmq CLI."""
