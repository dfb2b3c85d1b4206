"""Workers: tasks (model + private data), local training, and the service that runs tasks."""
