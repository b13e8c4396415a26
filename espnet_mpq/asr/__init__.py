"""ESPnet glue: the ``s3prl_mpq`` frontend, the ``mpq`` model, the task and trainer that drive them."""
